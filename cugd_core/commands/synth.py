"""`python -m cugd_core synth --photos DIR... --out DIR`: synthetic low-light pairs (LOL layout)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..layout import SIDES
from ..synth import PRESET_CHOICES, PRESETS, LowLightRecipe, synth_folder
from ..synth import __doc__ as SYNTH_DOC
from . import options
from .errors import exit_code


def describe(r: LowLightRecipe) -> str:
    """A preset's departures from the default recipe, for --help."""
    base = LowLightRecipe().to_dict()
    diff = {k: v for k, v in r.to_dict().items() if base.get(k) != v}
    return ", ".join(f"{k}={v}" for k, v in diff.items()) or "the default ranges"


def add_cli(subparsers) -> argparse.ArgumentParser:
    d = LowLightRecipe()
    p = subparsers.add_parser(
        "synth", help="make synthetic low-light pairs (LOL layout) from normal-light photos",
        description=SYNTH_DOC.split("\n\n")[0] + " Ranges are sampled log-uniformly per image.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--photos", nargs="+", required=True, metavar="DIR", help="folder(s) of photos")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (gets low/, high/, synth.json)")
    p.add_argument("--seed", type=int, default=0, help="global seed (per-image seeds derive from it and the name)")
    p.add_argument("--max-side", type=int, default=0, help="shrink so the longer side is at most this (0: keep)")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--workers", type=int, default=1, help="processes")
    p.add_argument("--overwrite", action="store_true", help="remake existing pairs")
    p.add_argument("--preset", choices=PRESET_CHOICES,
                   help="a named recipe (" + "; ".join(f"{k}: {describe(v)}" for k, v in PRESETS.items())
                   + "; mix: one of them per image) instead of the range options below")
    p.add_argument("--exposure", type=float, nargs=2, default=d.exposure, metavar=("MIN", "MAX"),
                   help="exposure gain range in linear light")
    p.add_argument("--wb-gain", type=float, nargs=2, default=d.wb_gain, metavar=("MIN", "MAX"),
                   help="red/blue white-balance gain range (1 1 disables)")
    p.add_argument("--shot-noise", type=float, nargs=2, default=d.shot_noise, metavar=("MIN", "MAX"),
                   help="shot-noise gain range (Brooks et al. 2019)")
    p.add_argument("--read-noise-std", type=float, default=d.read_noise_std,
                   help="std of log read-noise variance around 2.18 log(shot) + 1.20")
    p.add_argument("--no-noise", action="store_true", help="exposure and white balance only")
    p.add_argument("--gaussian-noise", action="store_true",
                   help="Gaussian approximation of the shot noise (as Brooks et al.) instead of Poisson")
    options.add_quiet(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    recipe = LowLightRecipe(exposure=tuple(args.exposure), wb_gain=tuple(args.wb_gain),
                            shot_noise=tuple(args.shot_noise), read_noise_std=args.read_noise_std,
                            noise=not args.no_noise, poisson=not args.gaussian_noise)
    report = synth_folder(args.photos, args.out, seed=args.seed, recipe=recipe,
                          max_side=args.max_side, recursive=args.recursive, preset=args.preset,
                          workers=args.workers, overwrite=args.overwrite, progress=not args.quiet)
    print(report.summary())
    print(f"pairs in {' and '.join(str(Path(args.out) / side) for side in SIDES)}")
    return exit_code(len(report.made), len(report.skipped), len(report.failed))
