"""Real low-light photos without ground truth (issue 20, item 4): NIQE, brightness, noise in flat
dark regions and "do no harm" on well-exposed inputs, for CUGD models beside classical curves, and a
contact sheet (input | each method) to look at.

    python bench/real_photos.py --photos ../shared/data/real_lowlight/dicm \
        --model models/cugd_default.safetensors [--model other.safetensors] \
        --max-side 512 --json real.json --sheet docs/real_dicm.jpg

Flat-region noise: the pixels whose 7x7 local standard deviation in the *input* is in its lowest
quartile and whose input luma is below the median (flat and dark, where a curve or a model can
only amplify or invent noise); reported is the mean 7x7 local standard deviation of each output's
luma (0-255) over those pixels. "Well exposed" inputs have a mean luma of at least 0.35; for them the
mean absolute difference from the input (0-255) says how much a method changed a photo it should
leave alone.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import uniform_filter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cugd_core import baselines  # noqa: E402
from cugd_core.evaluate import rgb_to_gray_u8  # noqa: E402
from cugd_core.imageops import IMAGE_EXTENSIONS, load_image  # noqa: E402
from cugd_core.niqe import niqe  # noqa: E402
from cugd_core.choices import AUTO  # noqa: E402
from cugd_core.commands.options import tile_value  # noqa: E402
from cugd_core.precision import cpu_flag_line  # noqa: E402
from cugd_core.samplers import SAMPLER_CHOICES  # noqa: E402

CURVES = {"input": baselines.identity, "gain_gamma": baselines.gain_gamma, "clahe": baselines.clahe}
WELL_EXPOSED = 0.35


def local_std(gray: np.ndarray, size: int = 7) -> np.ndarray:
    g = gray.astype(np.float64)
    m = uniform_filter(g, size)
    return np.sqrt(np.maximum(uniform_filter(g * g, size) - m * m, 0.0))


def flat_dark_mask(low_u8: np.ndarray) -> np.ndarray:
    """Flat (lowest quartile of 7x7 std) and dark (at most the median luma) pixels of the input; may be
    empty (e.g. a photo whose flat pixels are all bright)."""
    y = rgb_to_gray_u8(low_u8).astype(np.float64)
    s = local_std(y)
    return (s <= np.quantile(s, 0.25)) & (y <= np.median(y))


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    return np.asarray(Image.fromarray(image).resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS))


def scores(low: np.ndarray, out: np.ndarray, mask: np.ndarray) -> dict:
    y = rgb_to_gray_u8(out)
    return {"niqe": float(niqe(out)), "mean": float(out.mean() / 255.0),
            "flat_noise": float(local_std(y)[mask].mean()) if mask.any() else None,
            "diff_from_input": float(np.abs(out.astype(np.float64) - low).mean())}


def contact_sheet(rows: list[list[np.ndarray]], labels: list[str], thumb: int = 160) -> Image.Image:
    """One row per photo, one column per method, each cell `thumb` px high."""
    from PIL import ImageDraw
    cells = [[np.asarray(Image.fromarray(c).resize((max(1, round(c.shape[1] * thumb / c.shape[0])), thumb)))
              for c in row] for row in rows]
    col_w = [max(r[j].shape[1] for r in cells) for j in range(len(labels))]
    head = 18
    sheet = Image.new("RGB", (sum(col_w) + 2 * len(col_w), head + len(cells) * (thumb + 2)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    x = 0
    for j, lab in enumerate(labels):
        draw.text((x + 4, 3), lab, fill=(230, 230, 230))
        for i, row in enumerate(cells):
            sheet.paste(Image.fromarray(row[j]), (x, head + i * (thumb + 2)))
        x += col_w[j] + 2
    return sheet


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", required=True)
    ap.add_argument("--model", action="append", default=[], help="CUGD model file (repeatable)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--sampler", choices=SAMPLER_CHOICES, default=AUTO)
    ap.add_argument("--tile", type=tile_value, default=None, metavar="whole|auto|N",
                    help="for the models: whole (default), auto or 0 (from free memory), or a tile side in pixels")
    ap.add_argument("--max-side", type=int, default=512, help="shrink the photos first (CPU time)")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--json")
    ap.add_argument("--sheet", help="contact sheet JPEG (input | methods)")
    a = ap.parse_args(argv)

    import torch

    from cugd_core.enhance import compute_priors, default_sam, enhance
    from cugd_core.weights import load_denoiser
    files = sorted(p for p in Path(a.photos).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    files = files[:a.limit] if a.limit else files
    models = {Path(m).stem: load_denoiser(m).eval() for m in a.model}
    sam = default_sam()
    per, sheet_rows, seconds = {}, [], {k: 0.0 for k in models}
    for f in files:
        low = shrink(load_image(f), a.max_side)
        mask = flat_dark_mask(low)
        outs = {}
        for name, fn in CURVES.items():
            outs[name] = fn(low)
        priors = compute_priors(low, sam, "fast") if models else None
        for name, m in models.items():
            t0 = time.perf_counter()
            with torch.inference_mode():
                outs[name] = enhance(low, m, priors=priors, steps=a.steps, sampler=a.sampler, seed=0, tile=a.tile)
            seconds[name] += time.perf_counter() - t0
        per[f.name] = {k: scores(low, v, mask) for k, v in outs.items()}
        per[f.name]["input_mean"] = float(low.mean() / 255.0)
        sheet_rows.append(list(outs.values()))
        print(f.name, " ".join(f"{k}:{v['niqe']:.2f}/{v['mean']:.2f}" for k, v in per[f.name].items()
                               if isinstance(v, dict)), flush=True)

    methods = list(CURVES) + list(models)
    well = [n for n, r in per.items() if r["input_mean"] >= WELL_EXPOSED]
    print(f"\n{len(per)} photos (max side {a.max_side}), {len(well)} well exposed (input mean >= {WELL_EXPOSED}); "
          f"{cpu_flag_line()}")
    print(f"| method | NIQE (lower is better) | mean brightness | flat-dark-region noise (local std) | "
          f"change on well-exposed photos | s per photo |")
    print("|---|---|---|---|---|---|")
    table = {}
    for k in methods:
        row = {m: float(np.mean([per[n][k][m] for n in per if per[n][k][m] is not None]))
               for m in ("niqe", "mean", "flat_noise")}
        row["well_exposed_diff"] = float(np.mean([per[n][k]["diff_from_input"] for n in well])) if well else None
        row["s_per_photo"] = seconds[k] / max(1, len(per)) if k in models else None
        table[k] = row
        wd = "" if row["well_exposed_diff"] is None else f"{row['well_exposed_diff']:.1f}"
        sp = "" if row["s_per_photo"] is None else f"{row['s_per_photo']:.1f}"
        print(f"| {k} | {row['niqe']:.2f} | {row['mean']:.3f} | {row['flat_noise']:.2f} | {wd} | {sp} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"settings": vars(a), "mean": table, "per_image": per}, indent=1))
    if a.sheet:
        contact_sheet(sheet_rows, methods).save(a.sheet, quality=80, optimize=True)
        print(f"contact sheet: {a.sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
