"""Function-preserving growth of a trained denoiser: more residual blocks per level (Net2Net's
"deeper"), so that a larger model starts at a smaller one's quality instead of at noise.

`deepen(src, target)` copies `src` into `target`, a model whose config differs only by a larger
`res_blocks`, and makes every new block an identity:

- a new down block `(level, j >= old r)` has its second conv and its self-attention's output conv at
  zero, so it returns its input; its output (a new skip) is then a copy of the old last block's;
- the up path reads one skip per block, last pushed first. Old up block 0 keeps reading the level's
  last skip, old blocks 1..r read the older skips as before, and the new up blocks in between (which
  read the new, duplicate skips) return their running input: second conv and attention output at
  zero, 1x1 skip conv `[I | 0]` (keep h, ignore the skip).

Everything else of `target` (the new blocks' first convs, noise injections) keeps its own fresh
initialisation, so gradients reach the new blocks from the first step.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .config import CUGDConfig
from .unet import CUGDDenoiser, Downsample, ResBlockAttn


def can_deepen(src: CUGDConfig, target: CUGDConfig) -> bool:
    """Whether `target` is `src` with more residual blocks per level (every other tensor the same)."""
    return target.res_blocks > src.res_blocks and target.same_tensors(replace(src, res_blocks=target.res_blocks))


def _layout(model: CUGDDenoiser) -> tuple[dict, dict]:
    """Index of each entry of `model.downs` and `model.ups`, keyed `(level, j)` for blocks and
    `(level, "resample")` for the Downsample/Upsample after (down) or before (up) a level's blocks;
    `downs[0]` is the input conv. Read from the built model, so it follows `CUGDDenoiser`'s layout."""
    downs, level, j = {}, 0, 0
    for n, layer in enumerate(model.downs):
        if isinstance(layer, ResBlockAttn):
            downs[(level, j)], j = n, j + 1
        elif isinstance(layer, Downsample):
            downs[(level, "resample")], level, j = n, level + 1, 0
        else:
            downs["conv_in"] = n
    ups, level, j = {}, model.config.num_levels - 1, 0
    for n, layer in enumerate(model.ups):
        if isinstance(layer, ResBlockAttn):
            ups[(level, j)], j = n, j + 1
        else:  # Upsample: the next level's blocks follow
            ups[(level, "resample")], level, j = n, level - 1, 0
    return downs, ups


def _identity(block: ResBlockAttn, keep_channels: int | None = None) -> None:
    """Zero the block's residual branches so that it returns its input (or, for an up block, the first
    `keep_channels` channels of its concatenated input through `res_conv = [I | 0]`)."""
    last = block.res_block.block2.block[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    if hasattr(block, "attn"):
        torch.nn.init.zeros_(block.attn.out.weight)
        torch.nn.init.zeros_(block.attn.out.bias)
    if keep_channels is not None:
        conv = block.res_block.res_conv
        w = torch.zeros_like(conv.weight)
        w[:, :keep_channels, 0, 0] = torch.eye(keep_channels, dtype=w.dtype)
        conv.weight.copy_(w)
        torch.nn.init.zeros_(conv.bias)


@torch.no_grad()
def deepen(src: CUGDDenoiser, target: CUGDDenoiser) -> CUGDDenoiser:
    """Load `src` into `target` (in place; returned) so that both compute the same function.

    `target.config` must be `src.config` with a larger `res_blocks` (`can_deepen`).
    """
    if not can_deepen(src.config, target.config):
        raise ValueError(f"cannot deepen {src.config.to_dict()} into {target.config.to_dict()}: only a larger "
                         "res_blocks may differ")
    extra = target.config.res_blocks - src.config.res_blocks
    old_downs, old_ups = _layout(src)
    new_downs, new_ups = _layout(target)
    rename = {}
    for key, i in old_downs.items():
        rename[f"downs.{i}."] = f"downs.{new_downs[key]}."
    for (level, j), i in old_ups.items():
        moved = (level, j + extra) if isinstance(j, int) and j > 0 else (level, j)
        rename[f"ups.{i}."] = f"ups.{new_ups[moved]}."

    def new_name(name: str) -> str:
        for old, new in rename.items():
            if name.startswith(old):
                return new + name[len(old):]
        return name

    state = target.state_dict()
    for name, value in src.state_dict().items():
        key = new_name(name)
        if key in state:  # the uncertainty head may be present in one and not the other
            state[key].copy_(value)
    for level in range(target.config.num_levels):
        for j in range(src.config.res_blocks, target.config.res_blocks):
            _identity(target.downs[new_downs[(level, j)]])
        for j in range(1, 1 + extra):
            _identity(target.ups[new_ups[(level, j)]], keep_channels=target.config.level_channels(level))
    return target
