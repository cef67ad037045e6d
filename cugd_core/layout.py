"""The on-disk formats of paired data and where the models are, owned in one place (SPEC 6.1).

    <root>/low/NAME.png, <root>/high/NAME.png                       the pairs (LOL layout, same names)
    <root>/priors/<mode>/{low,high}/<stem>_{edge,semantic}.png      the priors cache (viridis PNGs)
    <root>/synth.json                                               how `synth` made the pairs
    <pack>/models/cugd_default.safetensors                          the default model (`DEFAULT_MODEL_PATH`)

A prior's file name `<stem>_<kind>.png` is the authors' format, also read from any folder
(`enhance --priors DIR`). `synth` writes this layout, `priors` and `train` fill the cache, and
`data`, `evaluate` and `train` read it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .imageops import IMAGE_EXTENSIONS

SIDES = ("low", "high")  # folder names: the dark input, the normal-light ground truth
KINDS = ("edge", "semantic")  # the two prior maps
PRIORS = "priors"  # the cache folder inside a paired folder
MANIFEST = "synth.json"  # synth's recipe, seed and per-image parameters
PACK_MODELS = Path(__file__).resolve().parents[1] / "models"  # the models folder shipped with the pack
DEFAULT_MODEL = "cugd_default.safetensors"  # the default model's file name
DEFAULT_MODEL_PATH = PACK_MODELS / DEFAULT_MODEL  # what the nodes use without a model


def models_dir() -> Path:
    """The CLI's model folder (`--model NAME` and the default model): `$CUGD_MODELS`, else `PACK_MODELS`."""
    return Path(os.environ.get("CUGD_MODELS") or PACK_MODELS)


def pair_paths(root: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """`(low, high)` files of the pair `name`."""
    return Path(root) / SIDES[0] / name, Path(root) / SIDES[1] / name


def list_pairs(root: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """`(name, low path, high path)` of a LOL-layout folder (`low/`, `high/`, same file names),
    sorted by name. Files present on one side only are an error."""
    root = Path(root)
    files = {}
    for side in SIDES:
        d = root / side
        if not d.is_dir():
            raise FileNotFoundError(f"{root} is not a paired folder: {d} is missing (expected low/ and high/)")
        files[side] = {p.name: p for p in d.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")}
    low, high = (files[s] for s in SIDES)
    only_low, only_high = sorted(set(low) - set(high)), sorted(set(high) - set(low))
    if only_low or only_high:
        raise ValueError(f"unpaired files in {root}: low only {only_low[:5]}, high only {only_high[:5]}")
    if not low:
        raise FileNotFoundError(f"no images in {root / SIDES[0]}")
    return [(n, low[n], high[n]) for n in sorted(low)]


def prior_file(folder: str | os.PathLike, stem: str, kind: str) -> Path:
    """A prior in the authors' file format: `<folder>/<stem>_<kind>.png`."""
    return Path(folder) / f"{stem}_{kind}.png"


def priors_dir(root: str | os.PathLike, mode: str) -> Path:
    """The priors cache of one mode: `<root>/priors/<mode>/` (holds `low/` and `high/`)."""
    return Path(root) / PRIORS / mode


def prior_path(root: str | os.PathLike, mode: str, side: str, name: str, kind: str) -> Path:
    """Cache file of one prior: `<root>/priors/<mode>/<side>/<stem>_<kind>.png`."""
    return prior_file(priors_dir(root, mode) / side, Path(name).stem, kind)


def missing_priors(root: str | os.PathLike, mode: str, sides: Sequence[str] = SIDES) -> list[str]:
    """Names of the pairs whose cache lacks any prior file of the given sides."""
    return [name for name, _, _ in list_pairs(root)
            if not all(prior_path(root, mode, s, name, k).is_file() for s in sides for k in KINDS)]
