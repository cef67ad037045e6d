"""`python -m cugd_core enhance` when things go wrong: outputs aimed at the inputs, an unwritable
output folder, partial failure (exit codes), animated GIFs, Ctrl-C at any point, and SIGKILL at
random points of a folder run. Real files, real subprocesses, a tiny random model."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cugd_core import commands
from cugd_core.imageops import load_image
from tests._enhance_helpers import dark_image, finished_outputs, write_dark, write_priors, write_tiny_model
from tests._paths import REPO

FAST = ["--steps", "2", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.safetensors")


def make_folder(root: Path, n: int, h: int = 24, w: int = 32) -> tuple[Path, Path]:
    for i in range(n):
        write_dark(root / "in" / f"img{i}.png", h, w, i)
        write_priors(root / "priors", f"img{i}", h, w, i)
    return root / "in", root / "priors"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


# -- outputs never land on the inputs ----------------------------------------------------------------
def test_output_folder_on_the_inputs_is_refused_before_any_work(tmp_path, tiny_model, capsys):
    src, priors = make_folder(tmp_path, 2)
    before = snapshot(src)
    common = ["--priors", str(priors), *FAST]
    # the check comes first: even a model that does not exist is not looked at yet
    cases = {
        "same folder, --overwrite": ([str(src), "-o", str(src), "--overwrite", "--model", "missing.safetensors"],
                                     "is the input folder"),
        "same folder": ([str(src), "-o", str(src) + "/", "--model", str(tiny_model)], "is the input folder"),
        "named file into its own folder": ([str(src / "img0.png"), "-o", str(src), "--model", str(tiny_model)],
                                           "would replace the input"),
        "inside, recursive": ([str(src), "-o", str(src / "enhanced"), "--recursive", "--model", str(tiny_model)],
                              "--recursive would read the outputs as inputs"),
    }
    for name, (args, message) in cases.items():
        assert commands.main(["enhance", *args, *common]) == commands.EXIT_USAGE == 2, name
        err = one_line_error(capsys)
        assert err.startswith("enhance: error:") and message in err and "-o" in err, (name, err)
        assert snapshot(src) == before, f"{name}: the originals changed"
    # a sub-folder of a (non-recursive) input folder is fine: outputs are never read back
    assert commands.main(["enhance", str(src), "-o", str(src / "enhanced"), "--model", str(tiny_model), *common]) == 0
    assert sorted(p.name for p in (src / "enhanced").iterdir()) == ["img0.png", "img1.png"]


# -- an unwritable output folder ------------------------------------------------------------------------
def test_unwritable_output_folder_is_found_before_the_model_or_any_image(tmp_path, tiny_model, capsys, monkeypatch):
    src, priors = make_folder(tmp_path, 2)
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr("cugd_core.commands.enhance.runner", no_work)
    for out, message in ((a_file / "out", "cannot write to the output folder"), (a_file, "is a file, not a folder")):
        code = commands.main(["enhance", str(src), "-o", str(out), "--model", str(tiny_model), "--priors", str(priors),
                         *FAST])
        err = one_line_error(capsys)
        assert code == 2 and message in err and str(out) in err and "choose a" in err, err
    assert a_file.read_text() == "not a folder"


def test_output_folder_probe_leaves_nothing_behind(tmp_path):
    from cugd_core.atomic import check_writable_dir

    (tmp_path / "old").mkdir()
    assert check_writable_dir(tmp_path / "old" / "new" / "nested") == tmp_path / "old" / "new" / "nested"
    assert not any((tmp_path / "old").iterdir())  # the folders it made are gone again
    assert check_writable_dir(tmp_path / "old") == tmp_path / "old" and not any((tmp_path / "old").iterdir())


# -- exit codes -------------------------------------------------------------------------------------------
def test_exit_codes_tell_success_partial_and_total_failure_apart(tmp_path, tiny_model, capsys):
    src, priors = make_folder(tmp_path, 1)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    common = ["--model", str(tiny_model), "--priors", str(priors), *FAST]
    assert commands.main(["enhance", str(src), "-o", str(tmp_path / "ok"), *common]) == commands.EXIT_OK == 0
    assert commands.main(["enhance", str(bad), "-o", str(tmp_path / "none"), *common]) == commands.EXIT_ALL_FAILED == 1
    assert "0 enhanced, 0 skipped (already done), 1 failed" in capsys.readouterr().err
    assert commands.main(["enhance", str(src), str(bad), "-o", str(tmp_path / "some"), *common]) == commands.EXIT_SOME_FAILED == 3
    assert "1 enhanced, 0 skipped (already done), 1 failed" in capsys.readouterr().err
    # what was done before counts: the rerun enhances nothing new, but the folder is not a total loss
    assert commands.main(["enhance", str(src), str(bad), "-o", str(tmp_path / "some"), *common]) == 3
    with pytest.raises(SystemExit):
        commands.main(["enhance", "--help"])
    help_text = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "3 ", "130"):
        assert f"\n  {code}" in help_text, code
    assert "exit codes:" in help_text and "some inputs failed" in help_text


# -- GIF --------------------------------------------------------------------------------------------------
def test_gifs_in_folders_are_enhanced_and_animated_ones_say_first_frame(tmp_path, tiny_model, capsys):
    src, priors = tmp_path / "in", tmp_path / "priors"
    src.mkdir()
    frames = [Image.fromarray(dark_image(24, 32, s)).convert("P", palette=Image.ADAPTIVE) for s in (0, 1)]
    frames[0].save(src / "still.gif")
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    for stem in ("still", "anim"):
        write_priors(priors, stem, 24, 32)
    with pytest.warns(UserWarning, match=r"anim\.gif has 2 frames: only the first frame is enhanced"):
        code = commands.main(["enhance", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model),
                         "--priors", str(priors), *FAST])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["anim.png", "still.png"]
    with pytest.warns(UserWarning, match="first frame"):
        first = load_image(src / "anim.gif")
    np.testing.assert_array_equal(first, np.asarray(frames[0].convert("RGB")))
    np.testing.assert_array_equal(first, load_image(src / "still.gif"))  # the same first frame


# -- Ctrl-C and SIGKILL in real processes -------------------------------------------------------------------
def _enhance_cmd(src: Path, out: Path, model: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "cugd_core", "enhance", str(src), "-o", str(out), "--model", str(model),
            "--quiet", "--device", "cpu", *extra]


def _start(cmd: list[str]) -> subprocess.Popen:
    # a shell's background jobs ignore SIGINT, and Python keeps an ignored SIGINT ignored: restore it
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.slow
def test_ctrl_c_with_sam_priors_running_always_exits_130(tmp_path, tiny_model):
    """SIGINT while the priors thread is inside SAM for a later image: right after the first output,
    and 0.7 s and 1.5 s later. Each run ends with the summary and exit 130 (it used to end in SIGABRT,
    `terminate called without an active exception`, 4 times in 5), and leaves only complete outputs."""
    src = tmp_path / "in"
    for i in range(6):
        write_dark(src / f"img{i}.png", 48, 64, i)
    for k, delay_after_first in enumerate((0.0, 0.7, 1.5)):
        out = tmp_path / f"out{k}"
        proc = _start(_enhance_cmd(src, out, tiny_model, "--steps", "3"))
        deadline = time.monotonic() + 600  # a bound for a starved machine, not a speed requirement
        while not finished_outputs(out) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert finished_outputs(out), "no output within 600 s"
        time.sleep(delay_after_first)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == commands.EXIT_INTERRUPTED == 130, (k, proc.returncode, err[-2000:])
        assert "interrupted" in err and "Traceback" not in err and "terminate called" not in err, err
        assert not [p for p in out.iterdir() if p.name.startswith(".")], "temp files left"
        for p in finished_outputs(out):
            assert load_image(p).shape == (48, 64, 3)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_files(tmp_path, tiny_model):
    """Kill -9 a pipelined folder run at seeded random moments, four times, into the same folder:
    after each kill every output is absent or byte-identical to an uninterrupted run's; the rerun
    completes it, and the folder then holds exactly those files (no temp files; a user's own file
    untouched)."""
    src, priors = make_folder(tmp_path, 6, 32, 48)
    args = ("--priors", str(priors), "--steps", "3", "--side-by-side")
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    t = time.monotonic()
    ref = _start(_enhance_cmd(src, ref_out, tiny_model, *args))
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err
    full_s = time.monotonic() - t
    want = snapshot(ref_out)
    assert len(want) == 12 and not [n for n in want if n.startswith(".")]
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    # A kill inside a write leaves `.<name>.XXXXXXXX.tmp.png` (no `finally` runs); with tiny images a
    # random kill rarely lands there, so one is also left the way such a kill leaves it.
    (out / ".img5.png.k1ll3d_0.tmp.png").write_bytes(b"\x89PNG half")
    rng = random.Random(17)
    for _ in range(4):
        proc = _start(_enhance_cmd(src, out, tiny_model, *args))
        time.sleep(rng.uniform(0.2, 1.0) * full_s)
        proc.kill()
        proc.communicate(timeout=60)
        for name, data in snapshot(out).items():
            if name == "notes.txt" or name.startswith("."):
                continue
            assert data == want[name], f"{name} is not the complete, correct output"
    final = _start(_enhance_cmd(src, out, tiny_model, *args))
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    assert snapshot(out) == {**want, "notes.txt": b"mine"}
