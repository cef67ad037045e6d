"""Scores of several methods on the same synthetic pairs, split by the exposure each pair was
darkened with (issue 20, item 2: "never beaten by a curve", bucket by bucket).

    python -m cugd_core evaluate --pairs PAIRS --model M --json model.json
    python -m cugd_core evaluate --pairs PAIRS --baseline gain_gamma --json gain_gamma.json
    python bench/model_report.py --manifest PAIRS/synth.json model=model.json gain_gamma=gain_gamma.json

Each score file is `evaluate --json`'s output (per-image rows); only the pairs every file scored
are compared. Prints one markdown table: per bucket and method, n, PSNR, gray SSIM, brightness error,
NIQE, and whether the first method beats every other in both PSNR and gray SSIM.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BUCKETS = ((0.02, 0.05), (0.05, 0.1), (0.1, 0.25), (0.25, 1.0))
SHOWN = ("psnr", "ssim_gray", "psnr_gtmean", "brightness_err", "brightness_bias", "niqe")


def bucket_of(exposure: float) -> tuple[float, float] | None:
    return next((b for b in BUCKETS if b[0] <= exposure < b[1] or (b[1] == 1.0 and exposure == 1.0)), None)


def per_image(path: str | Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(Path(path).read_text())["per_image"]}


def mean_of(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def report(manifest: dict, scores: dict[str, dict[str, dict]]) -> str:
    names = sorted(set.intersection(*(set(s) for s in scores.values())) & set(manifest["params"]))
    groups: dict[str, list[str]] = {"all": names}
    for b in BUCKETS:  # in exposure order; empty buckets left out
        members = [n for n in names if bucket_of(manifest["params"][n]["exposure"]) == b]
        if members:
            groups[f"x{b[0]:g}-{b[1]:g}"] = members
    first = next(iter(scores))
    lines = ["| exposure | method | n | " + " | ".join(SHOWN) + f" | {first} beats all in PSNR and SSIM |",
             "|---" * (len(SHOWN) + 4) + "|"]
    for g, members in groups.items():
        means = {m: {k: mean_of([s[n] for n in members], k) for k in SHOWN} for m, s in scores.items()}
        wins = all(means[first]["psnr"] > means[m]["psnr"] and means[first]["ssim_gray"] > means[m]["ssim_gray"]
                   for m in scores if m != first)
        for m in scores:
            cells = " | ".join("" if means[m][k] is None else f"{means[m][k]:.3f}" if k != "psnr" and k != "psnr_gtmean"
                               else f"{means[m][k]:.2f}" for k in SHOWN)
            lines.append(f"| {g} | {m} | {len(members)} | {cells} | {('yes' if wins else 'NO') if m == first else ''} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True, help="the pairs' synth.json")
    ap.add_argument("scores", nargs="+", metavar="NAME=JSON", help="evaluate --json files; the first is the model")
    a = ap.parse_args(argv)
    scores = {}
    for item in a.scores:
        name, _, path = item.partition("=")
        if not path:
            ap.error(f"expected NAME=JSON, got {item!r}")
        scores[name] = per_image(path)
    print(report(json.loads(Path(a.manifest).read_text()), scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
