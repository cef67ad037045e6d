"""How well can any method guess the ground truth's brightness from the dark input's mean alone?

    python bench/brightness_floor.py --train-photos DIR [DIR ...] --pairs PAIRS [--limit N]

Issue 20 asks for a mean brightness error |mean(out) - mean(gt)| <= 0.03 on the validation pairs.
The synthetic recipe darkens each photo by a random exposure (log-uniform x0.02-x0.25 by
default), independent of the photo, so the dark input's mean does not say how bright the photo
was. This prints two references on the pairs of PAIRS (using its `synth.json` exposures): the
best constant (the median gray mean of the training photos) and the Bayes estimate of the gray
mean given only the dark image's linear mean, under the recipe's exposure prior and the training
photos' brightness distribution (kernel regression over simulated draws). A model that beats the
second uses what the image shows, not just how dark it is.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cugd_core.evaluate import mean_gray  # noqa: E402
from cugd_core.imageops import load_image  # noqa: E402
from cugd_core.layout import MANIFEST, list_pairs  # noqa: E402
from cugd_core.synth import LowLightRecipe, list_photos, srgb_to_linear  # noqa: E402


def brightness(image_u8: np.ndarray) -> tuple[float, float]:
    """(gray mean in [0,1] as `evaluate` measures it, mean linear light)."""
    v = image_u8 / 255.0
    return mean_gray(v), float(srgb_to_linear(v).mean())


def bayes_gray_mean(dark_linear_mean: float, train: np.ndarray, exposure=(0.02, 0.25), draws: int = 4000,
                    bandwidth: float = 0.05, seed: int = 0) -> float:
    """E[gray mean of the photo | dark linear mean] for photos like `train` ([N, 2] rows of
    `brightness`) darkened by a log-uniform exposure; Gaussian kernel in log dark mean."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(exposure[0]), np.log(exposure[1]), (len(train), draws)))
    log_d = np.log(e * train[:, 1:2]).ravel()
    gray = np.repeat(train[:, 0], draws)
    w = np.exp(-0.5 * ((log_d - np.log(dark_linear_mean)) / bandwidth) ** 2)
    return float((w * gray).sum() / w.sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-photos", nargs="+", required=True)
    ap.add_argument("--pairs", required=True, help="synthetic pairs made with the default recipe")
    ap.add_argument("--limit", type=int, default=0)
    a = ap.parse_args(argv)
    train = np.array([brightness(load_image(p)) for p, _ in list_photos(a.train_photos)])
    manifest = json.loads((Path(a.pairs) / MANIFEST).read_text())
    exposure = tuple(manifest.get("recipe", {}).get("exposure", LowLightRecipe().exposure))
    const = float(np.median(train[:, 0]))
    rows = []
    for name, _, high in list_pairs(a.pairs)[: a.limit or None]:
        gray, lin = brightness(load_image(high))
        dark_lin = manifest["params"][name]["exposure"] * lin  # the noise-free dark mean (white balance ~1)
        rows.append((abs(const - gray), abs(bayes_gray_mean(dark_lin, train, exposure) - gray)))
    err = np.mean(rows, axis=0)
    print(f"{len(rows)} pairs of {a.pairs}; {len(train)} training photos (gray mean {train[:, 0].mean():.3f} "
          f"+- {train[:, 0].std():.3f}); exposure prior x{exposure[0]:g}-x{exposure[1]:g}")
    print("| brightness guess | mean abs brightness error |\n|---|---|")
    print(f"| best constant ({const:.3f}) | {err[0]:.4f} |")
    print(f"| Bayes, from the dark input's mean only | {err[1]:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
