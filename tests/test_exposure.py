"""Exposure control (issue 19): EV and a brightness reference act on the output, through a
highlight-preserving curve in linear light; EV 0 leaves today's output untouched.

The curve leaves black (0) and white (1) where they are, by design, and the tiny random test
model's outputs sit mostly there; the tests of what the control does to an enhanced image use the
shipped model (3 DDIM steps at 32x48: mid-tones, a fraction of a second)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cugd_core import exposure_control, session
from cugd_core.exposure import srgb_to_linear
from cugd_core.enhance import enhance
from cugd_core.imageops import crop, load_image, to_model_range, to_uint8
from cugd_core.weights import CheckpointError, load_denoiser, read_metadata, save_safetensors, update_metadata
from tests._enhance_helpers import dark_image, random_prior, tiny_denoiser, write_dark, write_priors
from tests._paths import REPO
from tests.test_cli import run_cli

H, W = 32, 48
PRIORS = (random_prior(H, W, 0), random_prior(H, W, 1))
KW = dict(priors=PRIORS, steps=3, sampler="ddim", seed=3)
SHIPPED = REPO / "models" / "cugd_default.safetensors"


@pytest.fixture(scope="module")
def shipped():
    return load_denoiser(SHIPPED).eval()


def photo(h=96, w=144) -> torch.Tensor:
    """scikit-image's coffee (CC0), shrunk: `[1,3,h,w]` in [-1,1]."""
    from skimage import data

    return to_model_range(np.asarray(Image.fromarray(data.coffee()).resize((w, h), Image.LANCZOS)))


def clipped(x: torch.Tensor) -> int:
    """Pixels with a channel at 255 after 8-bit rounding."""
    return int((to_uint8(x) == 255).any(axis=-1).sum())


def newly_white(before_u8: np.ndarray, after_u8: np.ndarray) -> int:
    """Pixels with a channel at 255 in `after` whose largest channel was below 254 in `before`: new
    clipping beyond the merge of the top 8-bit level (the curve's slope near white is 1/gain, so 254
    may round up to 255; a plain gain would send whole highlights there)."""
    return int(((after_u8 == 255).any(axis=-1) & (before_u8.max(axis=-1) < 254)).sum())


def lum(x) -> float:
    return float(exposure_control.mean_luminance(x if isinstance(x, torch.Tensor) else to_model_range(x)))


def test_exposure_zero_is_todays_output_bit_for_bit():
    model = tiny_denoiser()
    img = dark_image(H, W)
    out = enhance(img, model, exposure=0.0, **KW)
    # what the pipeline returned before the control existed: the sampler's state, cropped, to uint8
    cond = to_model_range(img)
    edge, semantic = (torch.from_numpy(p)[None] for p in PRIORS)
    traj = session.start(model, cond, edge, semantic, seed=3)
    traj = session.advance(model, traj, "ddim", session.plan_from_steps(3))
    np.testing.assert_array_equal(out, to_uint8(crop(traj.state.image(), H, W)))
    assert exposure_control.adjust_exposure(cond, 0.0) is cond


def test_ev_plus_one_is_brighter_without_new_clipping_or_hue_shift():
    x = photo()
    up, down = exposure_control.adjust_exposure(x, 1.0), exposure_control.adjust_exposure(x, -1.0)
    # 2x the light in the shadows, less towards white: the mean grows by less than a stop
    assert 1.15 < lum(up) / lum(x) < 2.0 and 0.5 < lum(down) / lum(x) < 0.87
    assert exposure_control.adjust_exposure(up, -1.0).sub(x).abs().max() < 1e-4  # +1 then -1 EV: back (one curve family)
    assert clipped(up) <= clipped(x) and clipped(down) <= clipped(x)
    # the curve scales the three linear channels of a pixel alike: their ratios (hue, saturation) stay
    lin_x, lin_up = (srgb_to_linear((t + 1) / 2)[0] for t in (x, up))
    ok = lin_x.amin(0) > 0.02
    ratio_x = lin_x[:, ok] / lin_x[:, ok].sum(0)
    ratio_up = lin_up[:, ok] / lin_up[:, ok].sum(0)
    assert (ratio_x - ratio_up).abs().max() < 1e-4


def test_ev_through_the_pipeline_and_darker_is_monotone(shipped):
    img = dark_image(H, W)
    outs = {ev: enhance(img, shipped, exposure=ev, **KW) for ev in (-2.0, -1.0, 0.0, 1.0, 2.0)}
    means = [lum(outs[ev]) for ev in sorted(outs)]
    assert all(a < b for a, b in zip(means, means[1:]))
    assert means[1] < 0.87 * means[2] and means[3] > 1.15 * means[2]  # a real change, as on the photo above
    assert newly_white(outs[0.0], outs[1.0]) == 0  # (at +2 EV the slope near white is 1/4: 253 may reach 255)
    assert all(clipped(to_model_range(outs[ev])) <= clipped(to_model_range(outs[0.0])) for ev in (-1.0, -2.0))


def test_brightness_reference_moves_the_mean_to_it(shipped):
    img = dark_image(H, W)
    base = enhance(img, shipped, **KW)
    ref = float(exposure_control.mean_luminance(photo()))
    matched = enhance(img, shipped, reference=ref, **KW)
    assert abs(lum(matched) - ref) < 0.2 * abs(lum(base) - ref)
    assert lum(matched) == pytest.approx(ref, rel=0.03)  # 8-bit rounding of a near-exact match
    brighter = enhance(img, shipped, reference=ref, exposure=0.5, **KW)
    assert 1.1 < lum(brighter) / lum(matched) < 2 ** 0.5


def test_references_are_checked():
    x = photo(16, 16)
    with pytest.raises(ValueError, match="2 images but 3 brightness references"):
        exposure_control.adjust_exposure(torch.cat([x, x]), 0.0, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="brightness reference must be an RGB image"):
        exposure_control.reference_luminance(torch.zeros(16, 16))
    with pytest.raises(ValueError, match="NaN"):
        exposure_control.reference_luminance(torch.full((1, 3, 4, 4), float("nan")))


def test_cli_exposure_and_brightness_reference(tmp_path):
    src = write_dark(tmp_path / "in" / "a.png", H, W)
    priors = tmp_path / "priors"
    write_priors(priors, "a", H, W)
    ref = tmp_path / "ref.png"
    Image.fromarray(to_uint8(photo())).save(ref)
    common = ["--model", SHIPPED, "--priors", priors, "--steps", "3", "--quiet", "--device", "cpu"]
    r = run_cli("enhance", src, "-o", tmp_path / "ev0", *common)
    assert r.returncode == 0, r.stderr
    r = run_cli("enhance", src, "-o", tmp_path / "ref", "--brightness-reference", ref, *common)
    assert r.returncode == 0, r.stderr
    assert lum(load_image(tmp_path / "ref" / "a.png")) == pytest.approx(lum(load_image(ref)), rel=0.03)
    r = run_cli("enhance", src, "-o", tmp_path / "ev1", "--exposure", "1", *common)
    assert r.returncode == 0, r.stderr
    assert lum(load_image(tmp_path / "ev1" / "a.png")) > 1.15 * lum(load_image(tmp_path / "ev0" / "a.png"))
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    r = run_cli("enhance", src, "-o", tmp_path / "bad", "--brightness-reference", bad, *common)
    assert r.returncode == 2 and "--brightness-reference" in r.stderr and "not a readable image" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "bad" / "a.png").exists()


def test_card_exposure_is_the_ev_it_prescribes_and_round_trips(shipped, tmp_path):
    """A card's `cugd_exposure` acts exactly like the EV `ev + per_stop * stops` given by hand; a
    brightness reference overrides it, a user EV adds to it, and re-saving the model keeps it."""
    carded = update_metadata(shutil.copy(SHIPPED, tmp_path / "carded.safetensors"),
                             {"cugd_exposure": {"ev": 0.5, "per_stop": 0.1}})
    model = load_denoiser(carded).eval()
    assert model.card_exposure == exposure_control.CardExposure(ev=0.5, per_stop=0.1)
    assert shipped.card_exposure is None
    img = dark_image(H, W)
    stops = float(torch.log2(exposure_control.condition_gain(to_model_range(img), exposure_control.MID_GREY)))
    assert 1 < stops <= 6  # a dark input: the card's per-stop term matters
    ev = float(model.card_exposure.ev_for(to_model_range(img)))
    assert ev == pytest.approx(0.5 + 0.1 * stops)
    np.testing.assert_array_equal(enhance(img, model, **KW), enhance(img, shipped, exposure=ev, **KW))
    np.testing.assert_array_equal(enhance(img, model, exposure=0.5, **KW),
                                  enhance(img, shipped, exposure=ev + 0.5, **KW))
    ref = float(exposure_control.mean_luminance(photo()))
    np.testing.assert_array_equal(enhance(img, model, reference=ref, **KW), enhance(img, shipped, reference=ref, **KW))
    # the nodes' path (a trajectory started by hand) carries the same EV
    traj = session.start(model, to_model_range(img), *(torch.from_numpy(p)[None] for p in PRIORS))
    assert float(traj.exposure.ev) == pytest.approx(ev)
    resaved = save_safetensors(model, tmp_path / "resaved.safetensors")
    assert load_denoiser(resaved).card_exposure == model.card_exposure
    assert "cugd_exposure" in read_metadata(resaved)


@pytest.mark.parametrize("value", ['{"ev": "bright"}', '{"ev": 0.1, "stops": 2}', '{"ev": 99, "per_stop": 0}', "0.3"])
def test_a_bad_card_exposure_names_the_file_and_the_fix(tmp_path, value):
    bad = update_metadata(shutil.copy(SHIPPED, tmp_path / "bad.safetensors"), {"cugd_exposure": value})
    with pytest.raises(CheckpointError, match="bad.safetensors.*cugd_exposure.*update_metadata"):
        load_denoiser(bad)
