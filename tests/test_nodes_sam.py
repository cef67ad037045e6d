"""Nodes that run Segment-Anything (the real MobileSAM) or build priors from masks, in-process on CPU.

Inputs are real photos shrunk to 96x64 and darkened in memory (never written to the repository).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests._paths import PHOTOS
from tests.test_nodes_exec import load_tiny, mask_batch, run

pytestmark = [pytest.mark.comfy, pytest.mark.slow]


def dark_photos(names=("test/100007.jpg", "test/100039.jpg"), size=(96, 64), gain=0.15):
    """ComfyUI IMAGE batch [B,H,W,3] of darkened real photos."""
    ims = [np.asarray(Image.open(PHOTOS / n).convert("RGB").resize(size, Image.BICUBIC), np.float32) / 255 * gain
           for n in names]
    return torch.from_numpy(np.stack(ims))


@pytest.fixture(scope="module")
def sam(comfy):
    return run(comfy, "CUGD_SAMLoader", sam_name="MobileSAM (default)", model_type="auto", device="auto")[0]


@pytest.fixture(scope="module")
def photos():
    return dark_photos()


@pytest.fixture(scope="module")
def sam_priors(comfy, sam, photos):
    return run(comfy, "CUGD_SAMPriors", image=photos, sam=sam, mode="fast").result


def test_sam_loader_gives_a_plain_segment_anything_model(sam):
    assert sam.model_type == "vit_t" and sam.checkpoint_path.endswith("mobile_sam.pt")
    assert all(hasattr(sam, a) for a in ("image_encoder", "prompt_encoder", "mask_decoder"))
    assert next(sam.parameters()).device.type == "cpu"


def test_sam_priors_per_image_with_previews(sam_priors, photos):
    priors, semantic, structure = sam_priors
    assert priors.edge.shape == priors.semantic.shape == (2, 3, 64, 96) and priors.mode == "fast"
    assert semantic.shape == structure.shape == (2, 64, 96, 3)
    assert torch.equal(semantic, priors.semantic.permute(0, 2, 3, 1))
    for maps in (priors.edge, priors.semantic):
        assert 0 <= maps.min() and maps.max() <= 1 and maps.std() > 0.05  # real structure, not a flat map
    # each image gets its own priors
    assert (priors.semantic[0] - priors.semantic[1]).abs().mean() > 0.05
    assert (priors.edge[0] - priors.edge[1]).abs().mean() > 0.02


def test_sam_model_of_other_packs_gives_the_same_priors(comfy, sam, sam_priors, photos):
    """comfyui_segment_anything and Impact Pack hand over a segment-anything `Sam` built from the
    checkpoint with their own registry (Impact Pack hangs a wrapper on it); ours must take it as is."""
    from mobile_sam import sam_model_registry

    other = sam_model_registry["vit_t"](checkpoint=sam.checkpoint_path).eval()
    other.model_name = "mobile_sam"  # as comfyui_segment_anything tags it
    other.sam_wrapper = object()  # as Impact Pack does (ignored)
    priors = run(comfy, "CUGD_SAMPriors", image=photos[:1], sam=other, mode="fast")[0]
    assert torch.allclose(priors.edge, sam_priors[0].edge[:1], atol=1e-6)
    assert torch.allclose(priors.semantic, sam_priors[0].semantic[:1], atol=1e-6)


def test_priors_from_a_mask_batch(comfy):
    from cugd_core.priors import priors_from_masks

    masks = torch.cat([mask_batch(48, 64, 4, seed=1), mask_batch(48, 64, 4, seed=2)])  # 4 regions per image
    one = run(comfy, "CUGD_MaskPriors", masks=masks[:4], masks_per_image=0).result
    edge, semantic = priors_from_masks(masks[:4])
    assert one[0].batch == 1 and torch.equal(one[0].edge[0], edge) and torch.equal(one[0].semantic[0], semantic)
    assert one[1].shape == (1, 48, 64, 3)
    two = run(comfy, "CUGD_MaskPriors", masks=masks, masks_per_image=4)[0]
    assert two.batch == 2 and torch.equal(two.edge[0], edge) and not torch.equal(two.edge[1], edge)
    with pytest.raises(ValueError, match="groups of masks_per_image=3"):
        run(comfy, "CUGD_MaskPriors", masks=masks, masks_per_image=3)


def test_enhance_node_batch_equals_single_and_reports_progress(comfy, sam, photos):
    from comfy import utils as comfy_utils

    tiny = load_tiny(comfy)
    args = dict(seed=3, steps=4, sampler="ddpm", prior_mode="fast", tile_size=0, tile_overlap=64, model=tiny, sam=sam)
    calls = []
    comfy_utils.set_progress_bar_global_hook(lambda value, total, preview, **kw: calls.append((value, total)))
    try:
        both = run(comfy, "CUGD_Enhance", image=photos, **args)[0]
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
    assert both.shape == photos.shape and both.dtype == torch.float32 and both.device.type == "cpu"
    assert both.std() > 0.01 and torch.isfinite(both).all()
    assert calls[-1][0] == calls[-1][1] == 4  # 4 steps of one tile; the two images go through together
    assert [v for v, _ in calls] == sorted(v for v, _ in calls)
    second = run(comfy, "CUGD_Enhance", image=photos[1:], **args)[0]
    assert (second[0] - both[1]).abs().max() <= 1 / 255 + 1e-6  # same image, same seed: same result
