"""Argument helpers shared by the commands: one definition (name, type, help) of each option that
several commands take, and hidden deprecated spellings that keep old scripts working.

The choices come from the core (`priors.PRIOR_MODES`, `precision.PRECISIONS`,
`samplers.SAMPLER_CHOICES`, `session.tile_setting`), never from a copy.
"""
from __future__ import annotations

import argparse
import sys

from ..choices import AUTO
from ..precision import PRECISIONS
from ..priors import PRIOR_MODES
from ..samplers import SAMPLER_CHOICES
from ..session import DEFAULT_STEPS, MAX_SAMPLES, check_samples, tile_setting
from ..tiling import DEFAULT_OVERLAP


def positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def finite_float(value: str) -> float:
    x = float(value)
    if x != x or x in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value}")
    return x


def tile_value(value: str):
    """`--tile`: 0 or auto (automatic), whole or none (no tiling), or a side in pixels (`session.tile_setting`)."""
    try:
        return tile_setting(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("tile ")) from None


class Deprecated(argparse.Action):
    """An old spelling of an option, hidden from --help: stores into the new option's destination and
    says on stderr which spelling to use instead."""

    def __init__(self, option_strings, dest, *, use: str, **kwargs):
        self.use = use
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated, use {self.use}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def deprecated_alias(p: argparse.ArgumentParser, old: str, new: str, *, dest: str, flag: bool = False, **kwargs) -> None:
    """Accept `old` as a hidden alias of `new` (a flag: `flag=True`, stores True)."""
    if flag:
        kwargs.update(nargs=0, const=True)
    p.add_argument(old, action=Deprecated, use=new, dest=dest, default=argparse.SUPPRESS, **kwargs)


def _default(default) -> str:
    """The help's default note (`%(default)s`, which ArgumentDefaultsHelpFormatter does not repeat)."""
    return "" if default is None else " (default: %(default)s)"


def add_device(p, default: str = AUTO, note: str = "") -> None:
    p.add_argument("--device", default=default,
                   help=f"{note}cpu, cuda, cuda:N or auto (cuda when available){_default(default)}")


def add_prior_mode(p, default: str | None = "fast", note: str = "") -> None:
    p.add_argument("--prior-mode", choices=PRIOR_MODES, default=default,
                   help=f"{note}SAM prior mode: fast (a 6x6 prompt grid, a few seconds per image) or exact "
                        f"(the authors' 24x24 grid, several times slower){_default(default)}")


def add_quiet(p) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_seed(p, default: int | None = 0, help: str = "noise seed") -> None:
    p.add_argument("--seed", type=int, default=default, help=help + _default(default))


def samples_value(value: str) -> int:
    """`--samples`: a whole number in the core's range (`session.check_samples`)."""
    try:
        return check_samples(int(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_SAMPLES}, got {value}") from None


def add_steps(p, note: str = "") -> None:
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"{note}sampling steps (at most 10 for the released schedule; at least the model card's "
                        f"cugd_min_steps, 3 for the shipped model; default: the card's cugd_steps, "
                        f"else {DEFAULT_STEPS})")


def add_samples(p, note: str = "") -> None:
    p.add_argument("--samples", type=samples_value, default=1, metavar="N",
                   help=f"{note}mean of N samples: smoother and cleaner, less fine detail and grain, N times the "
                        f"time (1 to {MAX_SAMPLES}; default 1: a single sample, the most detail)")


def add_sampler(p, default: str | None = AUTO, note: str = "") -> None:
    p.add_argument("--sampler", choices=SAMPLER_CHOICES, default=default,
                   help=f"{note}auto: the model's recommendation (its card's cugd_sampler, else ddpm); ddpm: the "
                        "authors' ancestral sampler; ddim: deterministic")


def add_precision(p, default: str = "fp32") -> None:
    p.add_argument("--precision", choices=PRECISIONS, default=default,
                   help="fp32 (exact, default) or bf16 (autocast, float32 weights: about 3x faster on CPUs "
                        "with AVX-512 BF16 or AMX and on GPUs; outputs differ slightly; other CPUs emulate it, "
                        "several times slower than fp32, and a warning says so); fp16: for GPUs")


def add_tiles(p) -> None:
    p.add_argument("--tile", type=tile_value, default=AUTO, metavar="auto|0|whole|N",
                   help="large images in tiles: auto or 0 = automatic (the whole image when it fits in free "
                        "memory, else the largest tiles that fit; default), whole = never tiled, N = tiles "
                        "of N pixels (at least 64)")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="tile overlap in pixels (feathered)")


def add_sam(p) -> None:
    p.add_argument("--sam", default=None,
                   help="SAM checkpoint for the priors: a path, a file name in the SAM folders (CUGD_SAM_DIRS, --sam-dir), or "
                        "hf://owner/repo/file (default: MobileSAM mobile_sam.pt)")


def add_exposure(p) -> None:
    """The user's exposure of the output (`exposure_control`): EV and a brightness reference image."""
    p.add_argument("--exposure", type=finite_float, default=0.0, metavar="EV",
                   help="brighter (+) or darker (-) than the model's choice (or the reference), in stops; "
                        "a highlight-preserving curve in linear light (default 0: the model's own)")
    p.add_argument("--brightness-reference", metavar="FILE",
                   help="match the mean luminance of this image (e.g. a well-exposed photo of the scene)")
