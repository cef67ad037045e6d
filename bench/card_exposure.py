"""Fit a model card's output exposure (`cugd_exposure`, `exposure_control.CardExposure`) on training
pairs, and optionally write it into the card (issue 20).

For every k-th pair the model enhances the dark image at its card (no card exposure), then the EV
that brings the output's mean luminance to the reference's is found (`output_gain_for`, the same
curve the exposure control applies). A robust line (Huber, IRLS) of that EV against the input's
`stops` below mid-grey gives `ev` and `per_stop`. Fit on *training* pairs: the validation sets stay
for scoring.

    python bench/card_exposure.py --pairs TRAIN_MIX6 --model models/next/cugd_gen6.safetensors \
        --every 7 --start 0 3 --json fit.json [--write]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cugd_core.layout import list_pairs  # noqa: E402
from cugd_core.evaluate import ModelPredictor  # noqa: E402
from cugd_core.exposure import condition_gain  # noqa: E402
from cugd_core.exposure_control import MID_GREY, CardExposure, output_gain_for, reference_luminance  # noqa: E402
from cugd_core.imageops import load_image, to_model_range  # noqa: E402
from cugd_core.precision import cpu_flag_line  # noqa: E402
from cugd_core.weights import EXPOSURE_META, update_metadata  # noqa: E402


def huber_line(x: np.ndarray, y: np.ndarray, k: float = 1.345, iters: int = 50) -> tuple[float, float]:
    """(intercept, slope) of a Huber regression of y on x by iteratively reweighted least squares."""
    a, w = np.c_[np.ones_like(x), x], np.ones_like(y)
    for _ in range(iters):
        coef = np.linalg.lstsq(a * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)[0]
        r = y - a @ coef
        scale = max(1.4826 * float(np.median(np.abs(r))), 1e-9)
        w = np.minimum(1.0, k * scale / np.maximum(np.abs(r), 1e-12))
    return float(coef[0]), float(coef[1])


def measure(model: str, pairs: str, every: int, starts: list[int], *, steps: int | None, sampler: str) -> list[dict]:
    predictor = ModelPredictor(model, pairs, sampler=sampler, steps=steps, seed=0)
    predictor.denoiser.card_exposure = None  # fit on the model's own brightness
    rows = []
    listed = list_pairs(pairs)
    for name, low_path, high_path in sorted({row for s in starts for row in listed[s::every]}):
        low, high = load_image(low_path), load_image(high_path)
        out = predictor(low, name)
        stops = float(torch.log2(condition_gain(to_model_range(low), MID_GREY)))
        ev = float(torch.log2(output_gain_for(to_model_range(out), reference_luminance(to_model_range(high)))))
        rows.append({"name": name, "stops": stops, "ev": ev})
        print(f"{name:<24} stops {stops:5.2f}  EV to the reference {ev:+.3f}", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", required=True, help="training pairs (low/, high/, optional priors cache)")
    p.add_argument("--model", required=True)
    p.add_argument("--every", type=int, default=7, help="every k-th pair (sorted by name)")
    p.add_argument("--start", type=int, nargs="+", default=[0], help="first pair(s); several give their union")
    p.add_argument("--steps", type=int, help="sampling steps (default: the card's)")
    p.add_argument("--sampler", default="auto")
    p.add_argument("--json", help="write the per-pair EVs and the fit here")
    p.add_argument("--write", action="store_true", help=f"store the fit as the model's {EXPOSURE_META}")
    a = p.parse_args(argv)
    rows = measure(a.model, a.pairs, a.every, a.start, steps=a.steps, sampler=a.sampler)
    x, y = np.array([r["stops"] for r in rows]), np.array([r["ev"] for r in rows])
    ev, per_stop = huber_line(x, y)
    card = CardExposure(ev=round(ev, 3), per_stop=round(per_stop, 3))
    resid = y - (card.ev + card.per_stop * x)
    print(f"\n{cpu_flag_line()}\n| pairs | mean EV needed | fit ev | fit per_stop | residual std (EV) | EV std |\n"
          f"|---|---|---|---|---|---|\n| {len(rows)} | {y.mean():+.3f} | {card.ev:+.3f} | {card.per_stop:+.3f} | "
          f"{resid.std():.3f} | {y.std():.3f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "pairs": a.pairs, "every": a.every, "start": a.start,
                                            "fit": {"ev": card.ev, "per_stop": card.per_stop}, "rows": rows}, indent=1))
    if a.write:
        update_metadata(a.model, {EXPOSURE_META: {"ev": card.ev, "per_stop": card.per_stop}})
        print(f"written: {a.model} {EXPOSURE_META} = {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
