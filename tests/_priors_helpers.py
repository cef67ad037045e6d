"""Shared pieces of the priors tests: a tiny random SAM, the golden stub predictor, real photos."""
from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import torch

from tests._paths import GOLDEN, PHOTOS


def tiny_sam(seed: int = 0, package: str = "segment_anything", img_size: int = 128):
    """A randomly initialised SAM built from the package's own modules (8x8 embedding, 32 channels)."""
    mod = __import__(f"{package}.modeling", fromlist=["Sam"])
    torch.manual_seed(seed)
    dim, emb = 32, img_size // 16
    sam = mod.Sam(
        image_encoder=mod.ImageEncoderViT(img_size=img_size, patch_size=16, embed_dim=32, depth=1, num_heads=2,
                                          out_chans=dim, window_size=4, use_rel_pos=True),
        prompt_encoder=mod.PromptEncoder(embed_dim=dim, image_embedding_size=(emb, emb),
                                         input_image_size=(img_size, img_size), mask_in_chans=4),
        mask_decoder=mod.MaskDecoder(num_multimask_outputs=3,
                                     transformer=mod.TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64,
                                                                       num_heads=2),
                                     transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    with torch.no_grad():  # spread the random weights so that masks are not all empty or full
        for p in sam.mask_decoder.output_hypernetworks_mlps.parameters():
            p.mul_(3.0)
    return sam.eval()


def golden_prior():
    return np.load(GOLDEN / "golden_prior.npz")


class StubPredictor:
    """The deterministic stand-in for SAM of golden case C (README of the fixtures), float32 torch."""

    def __init__(self, cfg: dict):
        self.a, self.b, self.scale = cfg["a"], cfg["b"], cfg["scale"]

    def set_image(self, image_u8):
        self.image = np.asarray(image_u8).astype(np.float32)
        self.h, self.w = image_u8.shape[:2]

    def predict(self, points_xy, multimask=True):
        h, w = self.h, self.w
        yy, xx = np.mgrid[0:h, 0:w]
        logits, ious = [], []
        for px, py in np.asarray(points_xy, dtype=np.float64):
            ix = min(max(int(np.floor(px)), 0), w - 1)
            iy = min(max(int(np.floor(py)), 0), h - 1)
            d = np.linalg.norm(self.image - self.image[iy, ix], axis=-1) / 255
            s = np.sqrt((xx - px) ** 2 + (yy - py) ** 2) / max(h, w)
            lk = torch.from_numpy(np.stack([self.scale * (self.a[k] - d - self.b[k] * s ** 2)
                                            for k in range(3)]).astype(np.float32))
            # predicted IoU in float32 arithmetic (this reproduces the fixture's values exactly)
            iou = torch.stack([0.6 + 0.3 * (lk[k] > 0).float().mean() - 0.05 * k + 0.001 * px / w for k in range(3)])
            logits.append(lk)
            ious.append(iou)
        return torch.stack(logits), torch.stack(ious).float()

    def upscale(self, logits):
        return logits  # already full resolution

    def reset_image(self):
        self.image = None


def stub_from_golden(z) -> StubPredictor:
    return StubPredictor(json.loads(str(z["C/stub_json"])))


@lru_cache(maxsize=None)
def photo(size=(160, 106), index: int = 0) -> np.ndarray:
    """A BSDS500 photo (read at test time from ../shared, never copied), landscape, resized."""
    from PIL import Image

    files = [p for p in sorted(PHOTOS.glob("test/*.jpg"))]
    landscape = []
    for p in files:
        with Image.open(p) as im:
            if im.width > im.height:
                landscape.append(p)
        if len(landscape) > index:
            break
    with Image.open(landscape[index]) as im:
        return np.asarray(im.convert("RGB").resize(size, Image.BICUBIC))
