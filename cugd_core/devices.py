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


def for_inference(model):
    """`model` in eval mode, its 4-D weights in channels-last order when it runs on the CPU: oneDNN's
    convolutions then skip a layout conversion per call (measured 1.25 s vs 1.59 s per network call
    on a 608x416 image, 2 cores; bench/bench_end_to_end.py). Same numbers up to float rounding
    (about 1e-4); inputs may stay contiguous. Returns the model (converted in place)."""
    import torch  # on use, as above

    model.eval()
    if next(model.parameters()).device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model
