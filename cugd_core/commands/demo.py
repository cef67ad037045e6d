"""`python -m cugd_core demo`: the README's first command, the bundled sample photo enhanced."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..layout import KINDS, prior_file
from ..pipeline import Job
from .enhance import add_sampling_args, brightness_reference, prepare, report, runner
from .errors import EXIT_CODES, EXIT_OK, CLIError

SAMPLE_IMAGE = Path(__file__).resolve().parents[2] / "assets" / "sample_dark.png"


def add_cli(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="enhance the bundled sample photo (assets/sample_dark.png)",
                              description="Enhance assets/sample_dark.png with the default model and MobileSAM "
                                          "priors; writes OUT/sample_enhanced.png and OUT/sample_before_after.png.",
                              epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", default="out", metavar="OUT", help="output folder (default: out)")
    p.add_argument("--image", default=str(SAMPLE_IMAGE), help=argparse.SUPPRESS)
    add_sampling_args(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    src = Path(args.image)
    if not src.is_file():
        raise CLIError(f"the sample image {src} is missing (is this a full checkout of the repository?)")
    out = Path(args.output)
    priors = tuple(prior_file(args.priors, src.stem, kind) for kind in KINDS) if args.priors else None
    job = Job(src, out / "sample_enhanced.png", out / "sample_before_after.png", priors)
    reference = brightness_reference(args.brightness_reference)
    prepare(args.model, out, True)
    code = report(runner(args, sam_needed=priors is None, reference=reference).run([job]), "demo")
    if code == EXIT_OK:
        print(f"wrote {job.out} and {job.side_by_side}")
    return code
