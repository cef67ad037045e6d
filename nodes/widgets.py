"""Inputs shared by several node modules (not a node module: it holds no nodes, so any node module
may import it without tying its fate to another's)."""
from __future__ import annotations

from comfy_api.latest import io

from cugd_core.choices import AUTO
from cugd_core.priors import PRIOR_MODES
from cugd_core.samplers import SAMPLER_CHOICES
from cugd_core.tiling import DEFAULT_OVERLAP, MIN_TILE

SAMPLER_TOOLTIP = ("auto = the sampler the model's card recommends (DDIM for the pack's default model, else DDPM); "
                   "ddpm = the authors' ancestral sampler; ddim = deterministic (no step noise).")


def sampler_input() -> io.Combo.Input:
    return io.Combo.Input("sampler", options=list(SAMPLER_CHOICES), default=AUTO, tooltip=SAMPLER_TOOLTIP)


def prior_mode_input(name: str, tooltip: str) -> io.Combo.Input:
    return io.Combo.Input(name, options=list(PRIOR_MODES), default="fast", tooltip=tooltip)


def tile_inputs() -> list:
    return [
        io.Int.Input("tile_size", default=0, min=0, max=8192, step=32,
                     tooltip="0 = automatic: the whole image when it fits in free memory, else tiles of the "
                             f"largest size that fits; a value = tiles of that side (at least {MIN_TILE}). Tiles "
                             "overlap and are blended at every step; out of memory retries with smaller tiles."),
        io.Int.Input("tile_overlap", default=DEFAULT_OVERLAP, min=0, max=1024, step=8,
                     tooltip="Overlap of neighbouring tiles in pixels (feathered blending)."),
    ]
