"""Priors of a whole LOL-layout dataset (`low/`, `high/`), cached as the PNGs the authors' loader reads.

Cache layout (`layout.py`): `<data>/priors/<mode>/{low,high}/<stem>_edge.png` and `<stem>_semantic.png`
(RGB uint8 viridis; or under `out_dir`). Each file is written atomically (temp file + rename), so an
interrupted run leaves no half-written PNG, and a rerun skips images whose two PNGs already exist.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..choices import check_choice
from ..imageops import IMAGE_EXTENSIONS, load_image, save_png_atomic
from ..layout import KINDS, SIDES, prior_file, priors_dir
from .extract import MODES, extract_prior_maps
from .loading import as_sam
from .maps import encode_prior_u8


def cache_dir(data_dir, mode: str = "fast", out_dir=None) -> Path:
    return Path(out_dir) if out_dir is not None else priors_dir(data_dir, mode)


def prior_paths(root, split: str, stem: str) -> tuple[Path, Path]:
    """`(edge, semantic)` files of one image in a cache folder `root`."""
    edge, semantic = (prior_file(Path(root) / split, stem, k) for k in KINDS)
    return edge, semantic


def dataset_images(data_dir, splits=SIDES) -> list[tuple[str, Path]]:
    """`(split, path)` of every image in `low/` and `high/` (or only the given splits), sorted."""
    data_dir = Path(data_dir)
    if unknown := set(splits) - set(SIDES):
        raise ValueError(f"splits must be among {SIDES}, got {sorted(unknown)}")
    found = [(s, p) for s in splits if (data_dir / s).is_dir()
             for p in sorted((data_dir / s).iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not found:
        raise FileNotFoundError(f"{data_dir}: no images in low/ or high/ (expected the LOL layout: "
                                f"{data_dir}/low/*.png and {data_dir}/high/*.png with the same names)")
    return found


def compute_dataset_priors(data_dir, out_dir=None, sam=None, mode: str = "fast", progress: bool = True,
                           *, overwrite: bool = False, sam_dirs=None, device=None, splits=SIDES) -> dict:
    """Write the edge/semantic prior PNGs of every `low/` and `high/` image; returns counts
    (`images`, `written`, `skipped`, `cache`). `splits=("low",)`: only the dark side (what
    evaluation and validation read).

    `sam`: a `Sam`, a wrapper, a checkpoint path/name (looked up in `sam_dirs` too), or None for the
    default MobileSAM; it is loaded only if some image still needs priors. `device`: where to run a
    model loaded here.
    """
    check_choice("mode", mode, sorted(MODES))
    items = dataset_images(data_dir, splits)
    root = cache_dir(data_dir, mode, out_dir)
    todo = [(s, p) for s, p in items if overwrite or not all(q.is_file() for q in prior_paths(root, s, p.stem))]
    stats = {"images": len(items), "skipped": len(items) - len(todo), "written": 0, "cache": str(root)}
    if not todo:
        return stats
    model = as_sam(sam, sam_dirs=sam_dirs)
    if device is not None:
        model = model.to(device)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc=f"priors ({mode})", unit="img")
    try:
        for split, path in todo:
            edge, sem, _ = extract_prior_maps(load_image(path), model, mode)
            e_path, s_path = prior_paths(root, split, path.stem)
            save_png_atomic(encode_prior_u8(edge), e_path)
            save_png_atomic(encode_prior_u8(sem), s_path)
            stats["written"] += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return stats


def load_cached_priors(data_dir, split: str, stem: str, mode: str = "fast", out_dir=None):
    """The cached priors of one image as float32 tensors `(edge, semantic)` `[3,H,W]` in [0,1]."""
    out = []
    for p in prior_paths(cache_dir(data_dir, mode, out_dir), split, stem):
        if not p.is_file():
            raise FileNotFoundError(f"{p} missing: run `python -m cugd_core priors --data {data_dir} "
                                    f"--mode {mode}` first")
        rgb = load_image(p)
        out.append(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div(255.0))
    return out[0], out[1]
