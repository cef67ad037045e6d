"""The exposure, brightness_reference and temporal inputs of CUGD Sampler, executed in-process.

The exposure tests load the shipped model: the tiny random one's outputs sit at black and white,
which the exposure curve leaves where they are by design."""
from __future__ import annotations

import pytest
import torch

from cugd_core.exposure_control import mean_luminance
from tests.test_nodes_exec import dark_images, load_tiny, run, synthetic_priors

pytestmark = pytest.mark.comfy


def sample(comfy, model, images, **kw):
    guidance = run(comfy, "CUGD_CUIEEncode", model=model, priors=synthetic_priors(comfy, images))[0]
    args = dict(model=model, image=images, guidance=guidance, seed=5, steps=3, sampler="ddim", start_step=0,
                end_step=1000, tile_size=0, tile_overlap=64)
    return run(comfy, "CUGD_Sampler", **{**args, **kw})[0]


def lum(image):  # IMAGE [B,H,W,3] in 0..1 -> [B]
    return mean_luminance(image.permute(0, 3, 1, 2) * 2 - 1)


def shipped(comfy):
    bridge = __import__(f"{comfy.pack_module.__name__}.nodes.comfy_bridge", fromlist=["DEFAULT_MODEL"])
    return load_tiny(comfy, model_name=bridge.DEFAULT_MODEL)


def test_sampler_exposure_and_brightness_reference(comfy):
    model = shipped(comfy)
    images = dark_images(2, 32, 40)
    base = sample(comfy, model, images)
    assert torch.equal(sample(comfy, model, images, exposure=0.0), base)
    assert (lum(sample(comfy, model, images, exposure=1.0)) > lum(base)).all()
    ref = torch.full((1, 8, 8, 3), 0.6)
    matched = sample(comfy, model, images, brightness_reference=ref)
    assert lum(matched) == pytest.approx(lum(ref).expand(2), rel=0.01)
    with pytest.raises(ValueError, match="brightness_reference must be a ComfyUI IMAGE"):
        sample(comfy, model, images, brightness_reference=torch.zeros(8, 8))


def test_sampler_temporal_keeps_identical_frames_identical(comfy):
    model = load_tiny(comfy)
    frames = dark_images(1, 32, 40).expand(3, -1, -1, -1).contiguous()
    out = sample(comfy, model, frames, temporal=True, sampler="auto")
    assert out.shape == frames.shape
    # the same noise and smoothed priors for every frame; the frames run as one batch, whose positions
    # oneDNN's channels-last CPU kernels (devices.for_inference) round differently, by about 3e-5
    for i in (1, 2):
        torch.testing.assert_close(out[i], out[0], atol=1e-4, rtol=0)
