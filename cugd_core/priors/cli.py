"""`python -m cugd_core priors --data DIR [--out DIR] [--mode fast|exact] [--sam PATH]`.

The main CLI registers this sub-command with `add_cli(subparsers)`.
"""
from __future__ import annotations

import argparse

from .dataset import compute_dataset_priors
from .extract import MODES


def add_cli(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "priors", help="compute and cache the SAM priors of a LOL-layout dataset (low/, high/)",
        description="Writes <stem>_edge.png and <stem>_semantic.png for every image of DATA/low and "
                    "DATA/high into DATA/priors/<mode>/ (or --out); resumable: existing files are skipped.")
    p.add_argument("--data", required=True, help="dataset folder with low/ and high/")
    p.add_argument("--out", default=None, help="cache folder (default: DATA/priors/<mode>)")
    p.add_argument("--mode", default="fast", choices=list(MODES),
                   help="fast: fewer prompts (default); exact: the authors' settings")
    p.add_argument("--sam", default=None,
                   help="SAM checkpoint path, file name in --sam-dir/CUGD_SAM_DIRS, or hf://owner/repo/file "
                        "(default: MobileSAM mobile_sam.pt)")
    p.add_argument("--sam-dir", action="append", default=None,
                   help="folder with SAM checkpoints (e.g. ComfyUI/models/sams); repeatable")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--overwrite", action="store_true", help="recompute existing files")
    p.add_argument("--split", choices=["low", "high"], default=None,
                   help="only this side (evaluate and validation read the low side's priors only)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    stats = compute_dataset_priors(args.data, args.out, sam=args.sam, mode=args.mode,
                                   progress=not args.no_progress, overwrite=args.overwrite,
                                   sam_dirs=args.sam_dir, device=args.device,
                                   **({"splits": (args.split,)} if args.split else {}))  # default: both
    print(f"priors: {stats['written']} written, {stats['skipped']} already cached, in {stats['cache']}")
    return 0


if __name__ == "__main__":  # standalone use before the main CLI registers it
    parser = argparse.ArgumentParser(prog="python -m cugd_core.priors.cli")
    add_cli(parser.add_subparsers(dest="command", required=True))
    a = parser.parse_args()
    raise SystemExit(a.func(a))
