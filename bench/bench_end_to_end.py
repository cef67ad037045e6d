"""End-to-end enhancement time and peak memory per model and photo size (issue 20, item 5).

    $COMFYUI_PYTHON bench/bench_end_to_end.py --model models/cugd_default.safetensors \
        --model other.safetensors --sizes 600x400,2400x1600 [--steps 10 [4]] [--tile whole|auto|N]

One photo (scikit-image's CC0 `coffee`, resized to each size and darkened by the default synth
recipe), MobileSAM fast priors + sampling with the model's recommended sampler (steps per model), float32,
channels-last weights on the CPU as the pack loads them (`devices.for_inference`), the
whole image (no tiles) unless `--tile` says otherwise. Each case runs in a fresh subprocess: wall
seconds of the priors and of the sampling, and peak RSS above the RSS after loading. A case whose
full attention would span more than `--max-tokens` level-2 tokens is not run (its cost grows with
the square of the pixels); its row says so.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cugd_core.commands.options import tile_value  # noqa: E402  (the CLI's --tile: one meaning of 0)


def parse_size(text: str) -> tuple[int, int]:
    """'600x400' (W x H) -> (H, W)."""
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def dark_photo(h: int, w: int):
    import numpy as np
    from PIL import Image
    from skimage import data

    from cugd_core.synth import pair_rng, synthesize_pair
    photo = np.asarray(Image.fromarray(data.coffee()).resize((w, h), Image.Resampling.LANCZOS))
    return synthesize_pair(photo, pair_rng(0, "coffee.png"))


def run_case(model_path: str, h: int, w: int, steps: int, tile) -> dict:
    """In this process: load, then time priors and sampling of one photo."""
    import torch

    from cugd_core.devices import for_inference
    from cugd_core.enhance import compute_priors, default_sam, enhance
    from cugd_core.weights import load_denoiser
    model, sam, low = for_inference(load_denoiser(model_path)), default_sam(), dark_photo(h, w)
    compute_priors(low[:64, :64], sam, "fast")  # warm-up of SAM's kernels, untimed
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    priors = compute_priors(low, sam, "fast")
    t1 = time.perf_counter()
    with torch.inference_mode():
        out = enhance(low, model, priors=priors, steps=steps, seed=0, tile=tile)
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"priors_s": t1 - t0, "sample_s": t2 - t1, "total_s": t2 - t0,
            "peak_gib": max(0, peak - base) / 2**20, "out_mean": float(out.mean())}


def full_attention_tokens(model_path: str, h: int, w: int) -> int:
    """Keys one level-2 attention spans: all (H/4)(W/4) positions, or the pooled grid."""
    from cugd_core.weights import load_denoiser
    grid = load_denoiser(model_path).config.attn_kv_grid
    n = (h // 4) * (w // 4)
    return min(n, grid * grid) if grid else n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--sizes", default="600x400,2400x1600")
    ap.add_argument("--steps", type=int, nargs="+", default=[10],
                    help="sampling steps: one for every model, or one per --model in order")
    ap.add_argument("--tile", type=tile_value, default=None, metavar="whole|auto|N",
                    help="whole (default), auto or 0 (from free memory), or a tile side in pixels")
    ap.add_argument("--max-tokens", type=int, default=40000, help="skip full attention over more keys than this")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    a = ap.parse_args(argv)
    if a.case:
        m, size = a.case.split("@")
        print(json.dumps(run_case(m, *parse_size(size), a.steps[0], a.tile)))
        return 0
    if len(a.steps) not in (1, len(a.model)):
        ap.error(f"--steps takes one value or one per --model ({len(a.model)})")
    steps = dict(zip(a.model, a.steps * len(a.model) if len(a.steps) == 1 else a.steps))

    from cugd_core.precision import cpu_flag_line
    rows = []
    for size in a.sizes.split(","):
        h, w = parse_size(size)
        for m in a.model:
            keys = full_attention_tokens(m, h, w)
            if keys > a.max_tokens:
                rows.append((Path(m).name, size, None, f"not run: full attention over {keys} keys per query "
                                                       f"({(h // 4) * (w // 4)} queries), quadratic in pixels"))
                continue
            cmd = [sys.executable, __file__, "--case", f"{m}@{size}", "--steps", str(steps[m]), "--tile", "whole" if a.tile is None else str(a.tile),
                   "--model", m]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                rows.append((Path(m).name, size, None, "failed: " + r.stderr.strip().splitlines()[-1][:120]))
                continue
            rows.append((Path(m).name, size, json.loads(r.stdout.strip().splitlines()[-1]), f"{steps[m]} steps"))
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"\nCPU: {cpu_flag_line()}; sampler auto, fast priors, fp32, channels-last weights, "
          f"{'whole image' if a.tile is None else f'tiles: {a.tile}'}")
    print("| model | size (WxH) | priors s | sampling s | total s | peak GiB above load | note |")
    print("|---|---|---|---|---|---|---|")
    for name, size, r, note in rows:
        if r is None:
            print(f"| {name} | {size} | | | | | {note} |")
        else:
            print(f"| {name} | {size} | {r['priors_s']:.1f} | {r['sample_s']:.1f} | {r['total_s']:.1f} | "
                  f"{r['peak_gib']:.2f} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
