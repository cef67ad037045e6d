"""Bad input at the core/CLI level: odd images, broken or hostile model files, interruption.

Each case gives a correct result or a one-line error with a non-zero exit code, never a traceback
and never a half-written output file.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cugd_core import commands
from cugd_core.enhance import enhance
from cugd_core.imageops import load_image
from tests._enhance_helpers import (dark_image, finished_outputs, random_prior, tiny_denoiser, write_dark, write_priors,
                                     write_tiny_model)
from tests._paths import REPO

FAST = ["--steps", "2", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.safetensors")


def _save(arr: np.ndarray, path: Path, mode: str | None = None) -> tuple[int, int]:
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)
    return arr.shape[0], arr.shape[1]


def test_odd_images_through_the_cli(tmp_path, tiny_model, capsys):
    src, priors = tmp_path / "in", tmp_path / "priors"
    src.mkdir()
    rgb = dark_image(30, 40)
    deep = (rgb[..., 0].astype(np.uint16) * 257)
    nanmap = np.full((30, 40), 0.1, np.float32)
    nanmap[0, :5], nanmap[1, :5], nanmap[2, :5] = np.nan, np.inf, -np.inf
    cases = {
        "gray.png": _save(rgb[..., 0], src / "gray.png"),
        "rgba.png": _save(np.dstack([rgb, np.full((30, 40), 128, np.uint8)]), src / "rgba.png"),
        "deep16.png": _save(deep, src / "deep16.png"),
        "one.png": _save(dark_image(1, 1), src / "one.png"),
        "odd.png": _save(dark_image(7, 13), src / "odd.png"),
        "wide.png": _save(dark_image(8, 1000), src / "wide.png"),
        "black.png": _save(np.zeros((30, 40, 3), np.uint8), src / "black.png"),
        "white.png": _save(np.full((30, 40, 3), 255, np.uint8), src / "white.png"),
        "nan.tif": _save(nanmap, src / "nan.tif"),
    }
    for i, (name, (h, w)) in enumerate(cases.items()):
        write_priors(priors, Path(name).stem, h, w, i)
    code = commands.main(["enhance", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model),
                     "--priors", str(priors), *FAST])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"{len(cases)} enhanced, 0 skipped (already done), 0 failed" in err
    outs = {name: load_image(tmp_path / "out" / (Path(name).stem + ".png")) for name in cases}
    for name, (h, w) in cases.items():
        assert outs[name].shape == (h, w, 3), name
    assert not np.array_equal(outs["black.png"], outs["white.png"])  # the condition matters
    # grayscale and 16-bit are read as the same RGB image a user would see
    gray_rgb = np.repeat(rgb[..., :1], 3, axis=2)
    assert np.array_equal(load_image(src / "gray.png"), gray_rgb)
    assert np.array_equal(load_image(src / "deep16.png"), gray_rgb)


def test_odd_arrays_through_the_api():
    model = tiny_denoiser(0)
    img = dark_image(20, 24).astype(np.float32) / 255
    img[0, 0] = np.nan
    img[1, 1] = np.inf
    out = enhance(img, model, priors=(random_prior(20, 24), random_prior(20, 24, 1)), steps=1)
    assert out.shape == (20, 24, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="shape"):
        enhance(np.zeros((0, 5, 3), np.uint8), model, priors=(random_prior(1, 5), random_prior(1, 5)))
    with pytest.raises(ValueError, match="shape"):
        enhance(np.zeros((4, 5, 7), np.uint8), model, priors=(random_prior(4, 5), random_prior(4, 5)))


class _Evil:
    """Unpickling this runs code (it writes the marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _model_files(tmp: Path, good: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a word the one-line error must contain)."""
    from safetensors.torch import save_file

    data = good.read_bytes()
    files = {}

    def put(name, payload: bytes, word: str):
        p = tmp / name
        p.write_bytes(payload)
        files[name] = (p, word)

    put("truncated.safetensors", data[: len(data) // 2], "")
    put("random.safetensors", os.urandom(4096), "")
    put("random.pth", os.urandom(4096), "")
    put("empty.safetensors", b"", "empty")
    save_file({"fc.weight": torch.zeros(10, 10), "fc.bias": torch.zeros(10)}, str(tmp / "other_arch.safetensors"))
    files["other_arch.safetensors"] = (tmp / "other_arch.safetensors", "")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, tmp / "resnet.pth")
    files["resnet.pth"] = (tmp / "resnet.pth", "")
    torch.save({"state": _Evil(marker)}, tmp / "evil.pth")
    files["evil.pth"] = (tmp / "evil.pth", "")
    put("evil_raw.pth", pickle.dumps(_Evil(marker)), "")
    return files


def test_bad_model_files_give_one_line_errors_and_no_output(tmp_path, tiny_model, capsys):
    marker = tmp_path / "code_was_run"
    src = write_dark(tmp_path / "in" / "x.png", 20, 20)
    write_priors(tmp_path / "priors", "x", 20, 20)
    files = _model_files(tmp_path, tiny_model, marker)
    cases = {name: str(path) for name, (path, _) in files.items()}
    cases["escape"] = "../../../../etc/cugd_model.safetensors"  # a name that tries to leave the models folder
    cases["absolute"] = "/nonexistent/dir/cugd.safetensors"
    for name, model in cases.items():
        out = tmp_path / f"out_{name}"
        code = commands.main(["enhance", str(src), "-o", str(out), "--model", model, "--priors", str(tmp_path / "priors"),
                         *FAST])
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert code == 2, (name, err)
        assert err.startswith("enhance: error:") and "\n" not in err and "Traceback" not in err, (name, err)
        word = files[name][1] if name in files else ""
        assert word in err.lower(), (name, err)
        assert not out.exists() or not any(out.iterdir()), name
    assert not marker.exists(), "unpickling ran code"
    # the mismatch names what does not fit; escapes are refused, not looked up
    code = commands.main(["enhance", str(src), "-o", str(tmp_path / "o"), "--model", str(files["other_arch.safetensors"][0]),
                     "--priors", str(tmp_path / "priors"), *FAST])
    assert "fc.weight" in capsys.readouterr().err or code == 2
    commands.main(["enhance", str(src), "-o", str(tmp_path / "o"), "--model", cases["escape"], *FAST])
    assert "refusing" in capsys.readouterr().err


def test_hostile_pickle_is_refused_by_the_real_entry_point(tmp_path):
    marker = tmp_path / "code_was_run"
    torch.save({"state": _Evil(marker)}, tmp_path / "evil.pth")
    write_dark(tmp_path / "x.png", 16, 16)
    r = subprocess.run([sys.executable, "-m", "cugd_core", "enhance", str(tmp_path / "x.png"), "-o",
                        str(tmp_path / "out"), "--model", str(tmp_path / "evil.pth"), "--quiet"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ctrl_c_in_the_middle_of_sampling_leaves_only_complete_files_and_resumes(tmp_path, tiny_model, capsys):
    src = tmp_path / "in"
    n = 6
    for i in range(n):
        write_dark(src / f"img{i}.png", 32, 48, i)
        write_priors(tmp_path / "priors", f"img{i}", 32, 48, i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cugd_core", "enhance", str(src), "-o", str(out), "--model", str(tiny_model),
           "--priors", str(tmp_path / "priors"), "--steps", "10", "--quiet", "--device", "cpu"]
    # a shell's background jobs ignore SIGINT, and Python keeps an ignored SIGINT ignored: restore it
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and not finished_outputs(out):
        time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    written = sorted(p.name for p in out.iterdir())
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert all(not name.startswith(".") for name in written), written  # no temp files
    assert 1 <= len(written) < n
    for name in written:
        assert load_image(out / name).shape == (32, 48, 3)
    assert commands.main(cmd[3:]) == 0  # the same command again resumes
    assert f"{n - len(written)} enhanced, {len(written)} skipped" in capsys.readouterr().err
