"""Make the README's sample image pair: `assets/sample_bright.png` (clean) and
`assets/sample_dark.png` (darkened by the synthesis recipe, fixed seed).

Source: scikit-image's `data.coffee()` (CC0, photograph by Rachel Michetti, see assets/README.md),
shrunk to 512 px on its longer side. Needs scikit-image (requirements-test.txt).

    python scripts/make_sample.py [--out assets]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cugd_core.imageops import save_png_atomic  # noqa: E402
from cugd_core.synth import (LowLightRecipe, apply_low_light, pair_rng, sample_params,  # noqa: E402
                             shrink_to_max_side)

SEED = 2029
NAME = "sample_dark.png"
MAX_SIDE = 512


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "assets"))
    args = ap.parse_args()
    from skimage import data

    high = shrink_to_max_side(data.coffee(), MAX_SIDE)
    recipe = LowLightRecipe()
    rng = pair_rng(SEED, NAME)
    params = sample_params(rng, recipe)
    low = apply_low_light(high, params, rng, recipe)
    out = Path(args.out)
    save_png_atomic(high, out / "sample_bright.png")
    save_png_atomic(low, out / NAME)
    print(json.dumps({"seed": SEED, "name": NAME, "size": list(high.shape[:2]), "params": params.to_dict(),
                      "mean_bright": round(float(high.mean()), 1), "mean_dark": round(float(low.mean()), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
