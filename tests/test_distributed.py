"""Folder inference under torchrun (issue 19): deterministic shares, outputs byte-identical to one
process, a killed rank loses only its in-flight images and a rerun resumes, one summary."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cugd_core import distributed
from tests._enhance_helpers import write_tiny_model
from tests._paths import REPO
from tests.comfy_env import free_port
from tests.test_cli import make_folder, run_cli

N_IMAGES = 6
SIZES = [(32, 48)] * N_IMAGES
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the same float arithmetic in every process


def test_shares_are_deterministic_disjoint_and_complete():
    items = list(range(11))
    for world in (1, 2, 3, 4):
        shares = [distributed.shard(items, distributed.Ranks(r, world)) for r in range(world)]
        assert sorted(x for s in shares for x in s) == items
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        assert shares[0] == items[::world]


def test_ranks_from_torchrun_environment():
    assert distributed.from_env({}) == distributed.Ranks(0, 1, 0, 1)
    r = distributed.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (r.rank, r.world, r.local_rank, r.local_world, r.active, r.leader) == (3, 4, 1, 2, True, False)
    with pytest.raises(ValueError, match="outside WORLD_SIZE"):
        distributed.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    assert distributed.device_for("cpu", r) == "cpu"


def _torchrun_cmd(src: Path, out: Path, model: Path, priors: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
            "-m", "cugd_core", "enhance", str(src), "-o", str(out), "--model", str(model), "--priors", str(priors),
            "--steps", "10", "--quiet", "--device", "cpu"]


def _env(marker: str) -> dict:
    return {**os.environ, **ONE_THREAD, "CUGD_TEST_MARKER": marker,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def outputs(folder: Path) -> dict[str, bytes]:
    """The finished outputs of a folder (hidden temporary files of an interrupted write left out)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def _pids_with(*entries: bytes) -> list[int]:
    """Processes whose environment holds every `entries` (e.g. b"RANK=1")."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                env = set((d / "environ").read_bytes().split(b"\0"))
            except OSError:
                continue
            if all(e in env for e in entries):
                pids.append(int(d.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank to kill through /proc")
def test_two_ranks_equal_one_process_and_a_killed_rank_resumes(tmp_path):
    src, priors = make_folder(tmp_path, SIZES)
    model = write_tiny_model(tmp_path / "tiny.safetensors")
    one = tmp_path / "one"
    r = run_cli("enhance", src, "-o", one, "--model", model, "--priors", priors, "--steps", "10", "--quiet",
                "--device", "cpu", env=ONE_THREAD)
    assert r.returncode == 0, r.stderr
    expected = outputs(one)
    assert len(expected) == N_IMAGES

    two = tmp_path / "two"
    r = subprocess.run(_torchrun_cmd(src, two, model, priors), env=_env("full"), capture_output=True, text=True,
                       timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    summaries = [line for line in r.stderr.splitlines() if line.startswith("enhance")]
    assert summaries == [s for s in summaries if "(2 ranks)" in s] and len(summaries) == 1, r.stderr[-2000:]
    assert f"{N_IMAGES} enhanced, 0 skipped" in summaries[0]
    assert outputs(two) == expected

    # kill rank 1 as soon as the first output appears; torchrun then stops rank 0 too
    three, marker = tmp_path / "three", f"kill-{tmp_path.name}"
    proc = subprocess.Popen(_torchrun_cmd(src, three, model, priors), env=_env(marker), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (three.is_dir() and outputs(three)):
        assert proc.poll() is None and time.monotonic() < deadline, "no output appeared"
        time.sleep(0.02)
    victims = _pids_with(b"RANK=1", f"CUGD_TEST_MARKER={marker}".encode())
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    # something was lost, nothing half-written under an output's name (a SIGKILL mid-write leaves
    # only a hidden temporary file, which the rerun removes)
    partial = outputs(three)
    assert 0 < len(partial) < N_IMAGES, sorted(partial)
    assert all(data == expected[name] for name, data in partial.items())

    r = subprocess.run(_torchrun_cmd(src, three, model, priors), env=_env("resume"), capture_output=True,
                       text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{N_IMAGES - len(partial)} enhanced, {len(partial)} skipped" in r.stderr
    assert outputs(three) == expected
    # and the temporary files the killed rank left are gone (issue 17's rerun cleanup, per rank)
    assert sorted(p.name for p in three.iterdir()) == sorted(expected)
