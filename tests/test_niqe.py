"""NIQE: parity with BasicSR's implementation (run on the repo's images by scripts/niqe_params.py),
its behaviour on real photos, and its place in `evaluate`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage import data

from cugd_core import niqe as N
from cugd_core.evaluate import evaluate_pairs, niqe_or_none, per_image
from cugd_core.synth import pair_rng, synthesize_pair

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "niqe_basicsr.json").read_text())


def _rgb(rel: str) -> np.ndarray:
    return np.asarray(Image.open(ROOT / rel).convert("RGB"))


@pytest.mark.parametrize("rel", sorted(FIXTURE["niqe"]))
def test_matches_basicsr_in_double_precision(rel):
    ref = FIXTURE["niqe"][rel]
    ours = N.niqe(_rgb(rel))
    # BasicSR's core on the float64 Y (as LIVE's MATLAB code, in double); its resize runs in float32
    assert ours == pytest.approx(ref["niqe_float64"], abs=1e-4)
    # its public calculate_niqe keeps Y in float32, which moves flat regions' variances a little
    assert ours == pytest.approx(ref["calculate_niqe_float32"], abs=0.02)


def test_pristine_model_and_window_are_lives():
    mu, cov = N.pristine_model()
    assert mu.shape == (36,) and cov.shape == (36, 36) and np.allclose(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) > -1e-9)  # a covariance
    w = N.gaussian_window()
    assert w.shape == (7, 7) and w.sum() == pytest.approx(1) and w[3, 3] == w.max()


def test_imresize_halves_like_matlab():
    ramp = np.tile(np.arange(40, dtype=np.float64), (6, 1))
    out = N.imresize(ramp, 0.5)
    assert out.shape == (3, 20)
    assert np.allclose(N.imresize(np.full((9, 7), 3.0), 0.5), 3.0)  # weights sum to 1, odd sizes round up
    # beyond the 8-tap kernel's reach of the (mirrored) borders a linear ramp stays linear:
    # output x (0-based) is centred on input 2x + 0.5
    assert np.allclose(out[:, 2:18], np.arange(2, 18) * 2 + 0.5)


def test_gray_input_is_scored_as_the_y_of_rgb():
    rgb = _rgb("assets/sample_bright.png")
    assert N.niqe(N.luma_y(rgb)) == N.niqe(rgb)
    assert N.niqe(N.luma_y(rgb)[..., None]) == N.niqe(rgb)


def test_noise_and_blur_score_worse_than_the_clean_photo():
    clean = data.astronaut()  # CC0, 512x512
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    blurred = gaussian_filter(clean.astype(np.float64), sigma=(3, 3, 0)).round().astype(np.uint8)
    q_clean, q_noisy, q_blur = N.niqe(clean), N.niqe(noisy), N.niqe(blurred)
    assert q_clean + 2 < q_noisy and q_clean + 2 < q_blur


def test_small_or_odd_inputs():
    with pytest.raises(ValueError, match="at least 96x96"):
        N.niqe(np.zeros((95, 300, 3), np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        N.niqe(np.zeros((100, 100, 4), np.uint8))
    assert niqe_or_none(np.zeros((95, 300, 3), np.uint8)) is None
    # a flat image has no natural statistics: no score rather than NaN in the JSON
    assert niqe_or_none(np.full((128, 128, 3), 90, np.uint8)) is None
    one_block = data.astronaut()[:100, :100]
    assert np.isfinite(N.niqe(one_block))


def test_evaluate_reports_niqe_of_predictions_large_enough(tmp_path):
    photos = {"big.png": data.astronaut()[:200, :300], "small.png": data.coffee()[::6, ::6]}
    for name, img in photos.items():
        for side, arr in (("high", img), ("low", synthesize_pair(img, pair_rng(2, name)))):
            (tmp_path / side).mkdir(exist_ok=True)
            Image.fromarray(arr).save(tmp_path / side / name)
    r = evaluate_pairs(tmp_path, predict_fn=per_image(lambda x: x), progress=False)
    big, small = r.per_image
    low_big = np.asarray(Image.open(tmp_path / "low" / "big.png"))
    assert big["niqe"] == N.niqe(low_big) and small["niqe"] is None
    assert r.mean["niqe"] == big["niqe"]  # the mean is over the images that have a score
    assert json.loads(json.dumps(r.to_dict(), allow_nan=False))["mean"]["niqe"] == big["niqe"]
    assert "niqe" in r.table() and " -" in r.table()
