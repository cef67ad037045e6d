"""Does a model know its training noise? Writes a copy of some pairs of a `synth` folder in which
every dark image is drawn again: the same clean image and the manifest's own parameters (exposure,
white balance, noise levels, preset), a fresh noise draw. `high/` and the cached priors are linked
from the original, so the model sees the same priors as before. Score both folders with `evaluate`:
a model that memorised the noise of its training pairs scores lower on the fresh draw.

    python bench/fresh_noise.py --pairs TRAIN_MIX --out /tmp/fresh --every 7 --limit 40 --seed 777
    python -m cugd_core evaluate --pairs /tmp/fresh --model M --sampler ddim --steps 3
    python -m cugd_core evaluate --pairs /tmp/fresh/original --model M --sampler ddim --steps 3

(`OUT/original` holds the same pairs as they were, linked.) Pairs are linked, never copied: the
photos stay where they are.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cugd_core.imageops import load_image, save_png_atomic  # noqa: E402
from cugd_core.layout import KINDS, MANIFEST, list_pairs, prior_path  # noqa: E402
from cugd_core.synth import PRESETS, LowLightParams, LowLightRecipe, apply_low_light  # noqa: E402


def recipe_and_params(manifest: dict, name: str) -> tuple[LowLightRecipe, LowLightParams]:
    """The recipe and drawn parameters of one pair of a `synth` manifest (per-pair preset first)."""
    params = dict(manifest["params"][name])
    preset = params.pop("preset", None)
    recipe = PRESETS[preset] if preset else LowLightRecipe.from_dict(manifest["recipe"])
    return recipe, LowLightParams(**params)


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(src.resolve(), dst)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", required=True, help="a synth folder (with its synth.json) and its fast priors")
    p.add_argument("--out", required=True)
    p.add_argument("--every", type=int, default=1, help="every k-th pair (sorted by name)")
    p.add_argument("--limit", type=int, default=40)
    p.add_argument("--seed", type=int, default=777, help="the fresh noise's seed")
    p.add_argument("--prior-mode", default="fast")
    a = p.parse_args()
    root, out = Path(a.pairs), Path(a.out)
    manifest = json.loads((root / MANIFEST).read_text())
    pairs = list_pairs(root)[::a.every][:a.limit]
    for name, low_path, high_path in pairs:
        recipe, params = recipe_and_params(manifest, name)
        rng = np.random.default_rng([a.seed, *name.encode()])
        save_png_atomic(apply_low_light(load_image(high_path), params, rng, recipe), out / "low" / name)
        link(low_path, out / "original" / "low" / name)
        for folder in (out, out / "original"):
            link(high_path, folder / "high" / name)
            for kind in KINDS:
                link(prior_path(root, a.prior_mode, "low", name, kind), prior_path(folder, a.prior_mode, "low", name, kind))
    print(f"{len(pairs)} pairs drawn again in {out} (the originals linked in {out / 'original'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
