"""Small real inputs for the enhance/tiling/CLI/bad-input tests: dark images and prior files on disk.

Priors are written in the authors' file format (`<stem>_edge.png`, `<stem>_semantic.png`, RGBA
viridis), so the CLI's `--priors DIR` path is exercised without running SAM in every test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.comfy_env import tiny_denoiser, write_tiny_model  # noqa: F401  (re-exported for the tests)


def dark_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth dark scene with noise: uint8 [H,W,3] in about 0..70."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 20 + 30 * np.sin(xx / max(w, 1) * 3 + seed)[..., None] * np.cos(yy / max(h, 1) * 2)[..., None]
    img = base + rng.normal(0, 4, (h, w, 3)) + np.array([0, 5, 10])
    return np.clip(img, 0, 255).astype(np.uint8)


def random_prior(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth prior map `[3,H,W]` float32 in [0,1] (stand-in for an encoded SAM map)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w, 1)
    phase = rng.random(3)[:, None, None] * 6
    return (0.5 + 0.5 * np.sin(6 * xx[None] + 4 * yy[None] + phase)).astype(np.float32)


def write_priors(folder: Path, stem: str, h: int, w: int, seed: int = 0) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, kind in enumerate(("edge", "semantic")):
        rgb = (random_prior(h, w, seed * 2 + k).transpose(1, 2, 0) * 255).astype(np.uint8)
        rgba = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)
        p = folder / f"{stem}_{kind}.png"
        Image.fromarray(rgba, "RGBA").save(p)
        paths.append(p)
    return paths[0], paths[1]


def write_dark(path: Path, h: int, w: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(dark_image(h, w, seed)).save(path)
    return path


def finished_outputs(out: Path) -> list[Path]:
    """The finished PNGs in a run's output folder (temp files start with '.'), [] while there is no
    folder. The folder may come and go at the start: the CLI's writability probe creates it and
    removes it again, so a listing can race with that rmdir."""
    try:
        return sorted(p for p in out.iterdir() if p.suffix == ".png" and not p.name.startswith("."))
    except FileNotFoundError:
        return []
