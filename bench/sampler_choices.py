"""The sampler as the user's choice (issue 20, item 6): detail vs. smoothness, measured.

    python bench/sampler_choices.py --model M --pairs PAIRS [--limit N] [--json OUT]

On synthetic pairs with cached priors (`python -m cugd_core priors --data PAIRS --split low`), one
table: per sampling choice, mean PSNR, gray SSIM, GT-mean PSNR, brightness error, NIQE and the
sampling time per image (the network calls only; priors are read from the cache). The choices:
DDIM with 10, 5, 4, 3 and 2 steps; the x0 estimate of the first step (one network call); the mean of
4 DDIM-5 or DDIM-4 samples with different noise (towards the posterior mean: smoother, 4x the calls).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cugd_core.data import load_pair, to_tensors  # noqa: E402
from cugd_core.enhance import enhance_tensor  # noqa: E402
from cugd_core.evaluate import image_metrics, niqe_or_none  # noqa: E402
from cugd_core.imageops import to_uint8  # noqa: E402
from cugd_core.layout import list_pairs  # noqa: E402
from cugd_core.precision import cpu_flag_line  # noqa: E402
from cugd_core.priors import PRIOR_MODES  # noqa: E402
from cugd_core.weights import load_denoiser  # noqa: E402

# name -> (DDIM steps, samples averaged)
CHOICES = {"ddim10": (10, 1), "ddim5": (5, 1), "ddim4": (4, 1), "ddim3": (3, 1), "ddim2": (2, 1), "x0_first_step": (1, 1),
           "mean4_ddim5": (5, 4), "mean4_ddim4": (4, 4)}
SHOWN = ("psnr", "ssim_gray", "psnr_gtmean", "brightness_err", "niqe", "seconds")


def sample_mean(model, cond, edge, semantic, steps: int, samples: int) -> torch.Tensor:
    """Mean of `samples` DDIM runs (seeds 0..samples-1) `[B,3,H,W]` in [-1,1], as `--samples` gives it;
    steps=1 is the x0 estimate of the first step (below the card's min_steps: `main` lifts the limit)."""
    return enhance_tensor(model, cond, edge, semantic, steps=steps, samples=samples, sampler="ddim", seed=0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--prior-mode", choices=PRIOR_MODES, default="fast")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--choices", nargs="+", default=list(CHOICES), choices=list(CHOICES))
    ap.add_argument("--json", help="write per-image rows here")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    model = load_denoiser(a.model).eval()
    model.min_steps = None  # to measure below the card's limit (x0_first_step)
    names = [n for n, _, _ in list_pairs(a.pairs)][: a.limit or None]
    rows = {c: [] for c in a.choices}
    for name in names:
        arr = load_pair(a.pairs, name, a.prior_mode, sides=("low",))
        t = {k: v.unsqueeze(0) for k, v in to_tensors(arr).items()}
        for c in a.choices:
            steps, samples = CHOICES[c]
            t0 = time.perf_counter()
            out = to_uint8(sample_mean(model, t["low"], t["low_edge"], t["low_semantic"], steps, samples)[0])
            dt = time.perf_counter() - t0
            rows[c].append({"name": name, **image_metrics(out, arr["high"]), "niqe": niqe_or_none(out), "seconds": dt})
        print(f"{name}: " + ", ".join(f"{c} {rows[c][-1]['psnr']:.2f}" for c in a.choices), file=sys.stderr)
    print(f"{len(names)} pairs of {a.pairs}; model {a.model}; {cpu_flag_line()}; "
          f"torch threads {torch.get_num_threads()}")
    print("| choice | steps x samples | " + " | ".join(SHOWN) + " |")
    print("|---" * (len(SHOWN) + 2) + "|")
    for c in a.choices:
        means = [np.mean([r[k] for r in rows[c] if r[k] is not None]) for k in SHOWN]
        cells = " | ".join(f"{v:.2f}" if k in ("psnr", "psnr_gtmean", "seconds") else f"{v:.3f}"
                           for k, v in zip(SHOWN, means))
        print(f"| {c} | {CHOICES[c][0]} x {CHOICES[c][1]} | {cells} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "pairs": a.pairs, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
