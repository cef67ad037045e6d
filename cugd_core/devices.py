"""Which torch device a user's `--device` choice means (the CLI, `evaluate` and the benchmarks)."""
from __future__ import annotations


def pick_device(device: str) -> str:
    """`auto` -> `cuda` when available, else `cpu`; `cpu`, `cuda`, `cuda:N` as given. A CUDA device
    on a machine or PyTorch build without CUDA is a ValueError that says what to pass instead."""
    import torch  # on use: the CLI imports this module before it knows whether the command needs torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available in this PyTorch build/machine; use --device cpu")
    return device
