"""Exposure of the condition: one gain per image in linear light (issue 20; `CUGDConfig.cond_exposure`).

A dark photo's brightness spans x0.02..x0.25 of a normal exposure (and more in the wild); a
network that has to infer that factor from pixels misjudges it on photos it has not seen. Models
with `cond_exposure > 0` get their condition scaled, before the network, so that its linear-light
mean is `cond_exposure`: the network starts from a normal exposure and only has to denoise,
restore colour and settle the tone. The gain is computed on the whole image (never per tile or
crop), so training crops, tiles and the whole image see the same brightness.

This is part of the model (its card fixes it). The user's exposure choice (EV, brightness
reference) acts on the output instead: `exposure_control.py`.
"""
from __future__ import annotations

import torch

MAX_GAIN = 64.0  # x64 = 6 stops: beyond that an 8-bit input holds no signal worth amplifying
MIN_GAIN = 0.25  # a bright input is brought down at most 2 stops (training inputs are all dark)


def srgb_to_linear(v: torch.Tensor) -> torch.Tensor:
    """Exact sRGB EOTF on encoded values in [0,1] (float tensors)."""
    return torch.where(v <= 0.04045, v / 12.92, ((v.clamp(min=0.0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Exact sRGB OETF on linear values, clipped to [0,1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def condition_gain(condition: torch.Tensor, target: float, strength: float = 1.0) -> torch.Tensor:
    """Gain `[B]` that brings each image's linear-light mean towards `target`: `(target/mean)**strength`
    (strength 1: exactly to it; below 1 the log distance shrinks by that factor, order is kept).

    condition: `[B,3,H,W]` in [-1,1] (the whole, unpadded image).
    """
    mean = srgb_to_linear((condition.float() + 1) / 2).mean(dim=(1, 2, 3))
    return ((target / mean.clamp(min=1e-6)) ** strength).clamp(MIN_GAIN, MAX_GAIN)


def apply_gain(condition: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """`[B,3,H,W]` in [-1,1] times `gain` `[B]` in linear light, back in [-1,1] (highlights clip)."""
    lin = srgb_to_linear((condition.float() + 1) / 2) * gain.reshape(-1, 1, 1, 1).float()
    return (linear_to_srgb(lin) * 2 - 1).to(condition.dtype)


def normalise_condition(condition: torch.Tensor, target: float, strength: float = 1.0) -> torch.Tensor:
    """The condition a model with `cond_exposure = target` (and `cond_exposure_strength`) sees
    (`target <= 0`: unchanged)."""
    if target <= 0:
        return condition
    return apply_gain(condition, condition_gain(condition, target, strength))


def model_condition(config, condition: torch.Tensor) -> torch.Tensor:
    """`normalise_condition` with a model's `CUGDConfig` settings."""
    return normalise_condition(condition, config.cond_exposure, config.cond_exposure_strength)
