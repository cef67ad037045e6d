"""The shipped default model: small, self-describing, and it turns a dark photo into a brighter,
non-degenerate one closer to the reference (real MobileSAM fast priors, the pack's enhance path)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cugd_core.enhance import enhance
from cugd_core.evaluate import psnr
from cugd_core.imageops import load_image
from cugd_core.weights import load_denoiser, read_metadata
from tests._paths import REPO

MODEL = REPO / "models" / "cugd_default.safetensors"


def test_default_model_file_and_card():
    assert MODEL.stat().st_size <= 15 * 2 ** 20
    meta = read_metadata(MODEL)
    assert meta["cugd_stored_dtype"] == "float16" and meta["prior_mode"] in ("fast", "exact")
    for key in ("steps", "train_seconds", "recipe", "data", "val", "license", "data_citation"):
        assert key in meta, key
    assert "non-commercial" in meta["license"] and "BSDS500" in meta["description"]
    val = json.loads(meta["val"])
    assert {"psnr", "ssim_gray", "psnr_gtmean", "ssim_gray_gtmean"} <= set(val)
    assert (REPO / "models" / "README.md").is_file()
    # the card recommends DDIM (it scores higher than DDPM for this model): what sampler "auto" picks
    assert meta["cugd_sampler"] == "ddim" and load_denoiser(MODEL).preferred_sampler == "ddim"


@pytest.mark.slow
def test_default_model_enhances_a_dark_photo():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        size = (192, 128)
        dark = np.array(Image.fromarray(load_image(REPO / "assets" / "sample_dark.png")).resize(size, Image.BILINEAR))
        ref = np.array(Image.fromarray(load_image(REPO / "assets" / "sample_bright.png")).resize(size, Image.BILINEAR))
        out = enhance(dark, load_denoiser(MODEL), prior_mode="fast", seed=0)
    finally:
        torch.set_num_threads(n)
    assert out.shape == dark.shape and out.dtype == np.uint8
    assert out.mean() > dark.mean() + 30  # brighter
    assert out.std() > 20 and len(np.unique(out.reshape(-1, 3), axis=0)) > 1000  # not flat
    assert psnr(out, ref) > psnr(dark, ref) + 5  # closer to the well-exposed reference
