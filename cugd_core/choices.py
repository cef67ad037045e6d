"""Validation of a user's choice among named options, one message for the whole pack.

The options themselves live beside their meaning (`priors.PRIOR_MODES`, `precision.PRECISIONS`,
`samplers.SAMPLER_CHOICES`, `priors.loading.MODEL_TYPES`, `evaluate.SSIM_WINDOWS`,
`session.tile_setting`); the CLI, the nodes and the benchmarks import them from there.
"""
from __future__ import annotations

from typing import Collection, TypeVar

T = TypeVar("T")

AUTO = "auto"  # "let the pack decide": sampler, tile size, SAM type, the nodes' device and dtype


def check_choice(name: str, value: T, choices: Collection[T]) -> T:
    """`value` when it is one of `choices`; else a ValueError naming the setting and its options."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value
