"""The committed next-generation milestones (`models/next/`, issue 20): each card (sampler, recommended
and fewest steps) drives the pipeline, and each turns a real dark photo into a brighter one whose
brightness error and grain stay bounded. Gen 3 predicts the noise (4 DDIM steps, at least 3); gen 4
predicts the clean image as a residual of its condition (3 DDIM steps, 1 already gives an image); gen 5
is gen 4 fine-tuned with well-exposed inputs too, and must leave such a photo nearly as it is; gen 6
is gen 5 fine-tuned so that it also brightens a noise-free darkening again; gen 8 is gen 6 fine-tuned
with the SSIM term weighted like the L1 sum, gen 9 gen 8 with that weight doubled."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cugd_core.enhance import compute_priors, default_sam, enhance
from cugd_core.evaluate import mean_gray, psnr
from cugd_core.imageops import load_image
from cugd_core.session import resolve_steps
from cugd_core.synth import PRESETS, LowLightParams, apply_low_light
from cugd_core.weights import load_denoiser
from tests._paths import REPO

NEXT = REPO / "models" / "next"
# file -> (sampler, recommended steps, fewest steps, prediction)
CARDS = {"cugd_gen3.safetensors": ("ddim", 4, 3, "eps"), "cugd_gen4.safetensors": ("ddim", 3, 1, "residual"),
         "cugd_gen5.safetensors": ("ddim", 3, 1, "residual"), "cugd_gen6.safetensors": ("ddim", 3, 1, "residual"),
         "cugd_gen8.safetensors": ("ddim", 3, 1, "residual"), "cugd_gen9.safetensors": ("ddim", 3, 1, "residual")}
# milestones trained with well-exposed inputs (synth's `exposed` preset): the most they may change an
# input that is already well exposed, as a mean absolute difference in grey levels (issue 20, "do no harm")
# (gen 5: 5.4, gen 6: 14.2, gen 8: 18.6, gen 9: 21.2, gen 4 would fail: 28.2)
DO_NO_HARM = {"cugd_gen5.safetensors": 8.0, "cugd_gen6.safetensors": 16.0, "cugd_gen8.safetensors": 21.0,
              "cugd_gen9.safetensors": 24.0}
# gen 5 learnt "no noise = already right" from noise-free identity pairs and leaves a noise-free
# darkening dark (models/README.md); gen 6 trains on noisy well-exposed pairs instead
LEAVES_NOISE_FREE_DARK = {"cugd_gen5.safetensors"}
SIZE = (192, 128)


def _sample(name: str) -> np.ndarray:
    return np.array(Image.fromarray(load_image(REPO / "assets" / name)).resize(SIZE, Image.BILINEAR))


def _enhance_with_card(image: np.ndarray, name: str) -> np.ndarray:
    """MobileSAM fast priors, the card's sampler and steps, seed 0."""
    edge, semantic = compute_priors(image, default_sam(), "fast")
    out = enhance(image, load_denoiser(NEXT / name), priors=(edge[0].numpy(), semantic[0].numpy()), steps=None, seed=0)
    assert out.shape == image.shape and out.dtype == np.uint8
    return out


@pytest.mark.parametrize("name", sorted(CARDS))
def test_milestone_cards(name):
    model = load_denoiser(NEXT / name)
    sampler, steps, fewest, prediction = CARDS[name]
    assert (model.preferred_sampler, model.default_steps, model.min_steps) == (sampler, steps, fewest)
    assert resolve_steps(model, None) == steps == resolve_steps(model, 0) and resolve_steps(model, 7) == 7
    c = model.config
    assert (c.attn_kv_grid, c.cond_exposure, c.cond_exposure_strength, c.prediction) == (16, 0.18, 0.5, prediction)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CARDS))
def test_milestone_brightens_the_sample_photo_within_bounds(one_thread, name):
    """Sample photo at 192x128, MobileSAM fast priors, the card's sampler and steps, seed 0: closer to
    the reference than the dark input by far, mean brightness within 0.08 of it, and no grain
    explosion (the local 3x3 spread of the output's luma at most 1.5x the reference's)."""
    dark, ref = _sample("sample_dark.png"), _sample("sample_bright.png")
    out = _enhance_with_card(dark, name)
    assert psnr(out, ref) > psnr(dark, ref) + 8
    assert abs(mean_gray(out / 255.0) - mean_gray(ref / 255.0)) < 0.08

    def grain(a):
        y = a.astype(np.float64).mean(-1)
        shifts = [np.roll(np.roll(y, i, 0), j, 1) for i in (-1, 0, 1) for j in (-1, 0, 1)]
        return float(np.std(shifts, axis=0)[2:-2, 2:-2].mean())

    assert grain(out) < 1.5 * grain(ref)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DO_NO_HARM))
def test_milestone_leaves_a_well_exposed_photo_nearly_alone(one_thread, name):
    """The sample's normal-light reference as the input: the output stays within the milestone's
    DO_NO_HARM bound of it."""
    photo = _sample("sample_bright.png")
    change = float(np.abs(_enhance_with_card(photo, name).astype(np.float64) - photo).mean())
    assert change < DO_NO_HARM[name], f"{name} changed a well-exposed photo by {change:.1f} grey levels"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(CARDS) - LEAVES_NOISE_FREE_DARK))
def test_milestone_brightens_a_noise_free_gamma_darkening(one_thread, name):
    """The reference darkened in sRGB by v**2 without noise (synth's `gamma` preset at its low end,
    mean 0.24 vs 0.41): the output's brightness comes within 0.05 of the reference's."""
    ref = _sample("sample_bright.png")
    v_squared = LowLightParams(exposure=1.0, wb_r=1.0, wb_b=1.0, shot_noise=0.0, read_noise=0.0, gamma=2.0)
    dark = apply_low_light(ref, v_squared, None, PRESETS["gamma"])
    out = _enhance_with_card(dark, name)
    assert abs(mean_gray(out / 255.0) - mean_gray(ref / 255.0)) < 0.05
    assert psnr(out, ref) > psnr(dark, ref) + 4
