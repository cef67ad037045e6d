"""Validation of a user's choice among named options, one message for the whole pack."""
from __future__ import annotations

from typing import Collection, TypeVar

T = TypeVar("T")


def check_choice(name: str, value: T, choices: Collection[T]) -> T:
    """`value` when it is one of `choices`; else a ValueError naming the setting and its options."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value
