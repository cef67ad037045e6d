"""`python -m cugd_core priors --data DIR [--out DIR] [--prior-mode fast|exact] [--sam PATH]`: the
priors cache of a LOL-layout folder."""
from __future__ import annotations

import argparse

from ..devices import pick_device
from ..layout import SIDES
from ..priors import PRIOR_MODES, compute_dataset_priors
from . import options


def add_cli(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "priors", help="compute and cache the SAM priors of a LOL-layout dataset (low/, high/)",
        description="Writes <stem>_edge.png and <stem>_semantic.png for every image of DATA/low and "
                    "DATA/high into DATA/priors/<mode>/ (or --out); resumable: existing files are skipped.")
    p.add_argument("--data", required=True, help="dataset folder with low/ and high/")
    p.add_argument("--out", default=None, help="cache folder (default: DATA/priors/<mode>)")
    options.add_prior_mode(p)
    options.deprecated_alias(p, "--mode", "--prior-mode", dest="prior_mode", choices=PRIOR_MODES)
    options.add_sam(p)
    p.add_argument("--sam-dir", action="append", default=None,
                   help="folder with SAM checkpoints (e.g. ComfyUI/models/sams); repeatable")
    options.add_device(p, default="cpu")
    p.add_argument("--overwrite", action="store_true", help="recompute existing files")
    p.add_argument("--split", choices=SIDES, default=None,
                   help="only this side (evaluate and validation read the low side's priors only)")
    options.add_quiet(p)
    options.deprecated_alias(p, "--no-progress", "--quiet", dest="quiet", flag=True)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    stats = compute_dataset_priors(args.data, args.out, sam=args.sam, mode=args.prior_mode,
                                   progress=not args.quiet, overwrite=args.overwrite,
                                   sam_dirs=args.sam_dir, device=pick_device(args.device),
                                   **({"splits": (args.split,)} if args.split else {}))  # default: both
    print(f"priors: {stats['written']} written, {stats['skipped']} already cached, in {stats['cache']}")
    return 0
