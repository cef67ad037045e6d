"""Compute precision of the denoiser: exact float32, or a bfloat16 mode for speed.

`with precision.autocast("bf16"): eps = denoiser(x, gamma, guidance=g)` (or around a whole
`samplers.sample(...)` call) runs convolutions, linear layers and attention in bfloat16 with float32
accumulation, through `torch.autocast`. The weights stay float32, the residual sums stay float32
(a bf16 layer output plus a float32 skip promotes to float32), GroupNorm accumulates its statistics in
float32, and the denoiser returns eps in the dtype of its input. `bench/bench_denoiser.py` measures
the speed and the output difference (see `bench/README.md`); `BF16_TOLERANCE` is the bound the
tests hold it to.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")  # fp16: for GPUs (ComfyUI picks it where bf16 is unsupported)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Max |eps_bf16 - eps_fp32| accepted by tests/test_bench_reference.py on the released architecture
# (random weights, unit-variance eps). bf16 keeps 8 mantissa bits (relative rounding 2^-9 = 2e-3);
# errors from ~40 layers add up to a few 1e-2 at most, far below the noise level the sampler adds.
BF16_TOLERANCE = 0.1


def autocast(precision: str = "fp32", device_type: str = "cpu") -> contextlib.AbstractContextManager:
    """Context in which denoiser calls run at `precision` ("fp32": a no-op; "bf16"/"fp16": autocast).

    The weights stay float32: on CPU, autocast was faster than converting them to bfloat16
    (bench/README.md), and one loaded model serves every precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=DTYPES[precision])


def name(dtype: torch.dtype) -> str:
    """torch dtype -> its precision name ("fp32", "bf16", "fp16")."""
    for key, value in DTYPES.items():
        if value == dtype:
            return key
    raise ValueError(f"no compute precision for {dtype}; use one of {PRECISIONS}")
