"""Tiny paired folders for the training tests: crops of a real BSDS500 photo, darkened by `synth`,
with quick stand-in priors (luma and gradient maps, viridis-encoded by `priors.maps`) written in
the priors-cache layout that training reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cugd_core.layout import KINDS, SIDES, prior_path
from cugd_core.imageops import load_image, save_png_atomic
from cugd_core.priors.maps import encode_prior_u8
from cugd_core.synth import pair_rng, synthesize_pair
from tests._paths import PHOTOS

TINY_MODEL = {"inner_channel": 32, "norm_groups": 16, "channel_multiplier": [1, 1, 2], "res_blocks": 1,
              "image_size": 32, "attn_res": [8], "dropout": 0.0}


def _norm(m: np.ndarray) -> np.ndarray:
    m = m.astype(np.float32)
    return (m - m.min()) / max(float(m.max() - m.min()), 1e-6)


def quick_maps(image_u8: np.ndarray) -> dict[str, np.ndarray]:
    """Stand-in prior maps `[H,W]` in [0,1]: semantic = normalised luma, edge = gradient magnitude."""
    y = image_u8.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    gy, gx = np.gradient(y)
    return {"semantic": _norm(y), "edge": _norm(np.hypot(gx, gy))}


def make_pairs(root: Path, count: int, size: tuple[int, int], *, photo: str = "test/100007.jpg", seed: int = 0) -> Path:
    """`count` pairs of `size` (h, w) cut from one downscaled photo, with priors in the `fast` cache."""
    src = load_image(PHOTOS / photo)
    h, w = size
    small = np.asarray(Image.fromarray(src).resize((w * 3, h * 3), Image.Resampling.LANCZOS))
    for i in range(count):
        y, x = divmod(i, 3)
        high = np.ascontiguousarray(small[(y % 3) * h:(y % 3 + 1) * h, x * w:(x + 1) * w])
        if i >= 9:
            high = np.ascontiguousarray(high[:, ::-1])
        name = f"p{i:02d}.png"
        low = synthesize_pair(high, pair_rng(seed, name))
        save_png_atomic(low, root / "low" / name)
        save_png_atomic(high, root / "high" / name)
        for side, img in zip(SIDES, (np.clip(low.astype(np.float32) * 8, 0, 255).astype(np.uint8), high)):
            maps = quick_maps(img)
            for kind in KINDS:
                save_png_atomic(encode_prior_u8(maps[kind]), prior_path(root, "fast", side, name, kind))
    return root
