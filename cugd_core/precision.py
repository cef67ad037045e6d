"""Compute precision of the denoiser: exact float32, or a bfloat16 mode for speed.

`with precision.autocast("bf16"): eps = denoiser(x, gamma, guidance=g)` (or around a whole
`samplers.sample(...)` call) runs convolutions, linear layers and attention in bfloat16 with float32
accumulation, through `torch.autocast`. The weights stay float32, the residual sums stay float32
(a bf16 layer output plus a float32 skip promotes to float32), GroupNorm accumulates its statistics in
float32, and the denoiser returns eps in the dtype of its input. `bench/bench_denoiser.py` measures
the speed and the output difference (see `bench/README.md`); `BF16_TOLERANCE` is the bound the
tests hold it to.

bf16 is only fast on a CPU that computes it in hardware (AVX-512 BF16 or AMX): elsewhere (e.g. an
AVX2-only CPU) torch emulates it and a whole image takes 6-9x longer than in float32. Nothing here
picks bf16 on its own on a CPU, and asking for it on such a CPU warns (`BF16Warning`).
"""
from __future__ import annotations

import contextlib
import functools
import warnings

import torch

from .choices import check_choice

PRECISIONS = ("fp32", "bf16", "fp16")  # fp16: for GPUs (ComfyUI picks it where bf16 is unsupported)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Max |eps_bf16 - eps_fp32| accepted by tests/test_bench_reference.py on the released architecture
# (random weights, unit-variance eps). bf16 keeps 8 mantissa bits (relative rounding 2^-9 = 2e-3);
# errors from ~40 layers add up to a few 1e-2 at most, far below the noise level the sampler adds.
BF16_TOLERANCE = 0.1

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of hardware bfloat16 math
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")  # what benchmarks record


class BF16Warning(UserWarning):
    """bf16 was asked for on a CPU that emulates it (much slower than float32)."""


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (`/proc/cpuinfo`, Linux); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_bf16_cpu() -> bool:
    """Whether this CPU does bfloat16 math in hardware (AVX-512 BF16 or AMX)."""
    flags = cpu_flags()
    if flags:
        return any(f in flags for f in NATIVE_BF16_FLAGS)
    # no /proc/cpuinfo (macOS, Windows): ask torch's own (private) probes where it has them
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(p() for p in probes if p is not None)


def cpu_flag_line() -> str:
    """One line naming the CPU features that decide float32/bf16 speed, for benchmark tables."""
    flags = cpu_flags()
    present = [f for f in REPORTED_FLAGS if f in flags]
    absent = [f for f in REPORTED_FLAGS if f not in flags]
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    return (f"CPU flags: {' '.join(present) or 'none of ' + ', '.join(REPORTED_FLAGS)}"
            + (f" (absent: {' '.join(absent)})" if absent and present else "")
            + f"; torch CPU capability {capability}; native bf16: {'yes' if native_bf16_cpu() else 'no'}")


def warn_if_emulated(precision: str, device_type: str) -> None:
    """Warn (`BF16Warning`) when bf16 is asked for on a CPU without hardware bf16."""
    if precision == "bf16" and device_type == "cpu" and not native_bf16_cpu():
        warnings.warn("bf16 was requested on a CPU without hardware bfloat16 (no avx512_bf16 or amx_bf16 "
                      "flag): torch emulates it, which is several times slower than fp32 here; use fp32",
                      BF16Warning, stacklevel=3)


def autocast(precision: str = "fp32", device_type: str = "cpu") -> contextlib.AbstractContextManager:
    """Context in which denoiser calls run at `precision` ("fp32": a no-op; "bf16"/"fp16": autocast).

    The weights stay float32: on CPU, autocast was faster than converting them to bfloat16
    (bench/README.md), and one loaded model serves every precision.
    """
    if check_choice("precision", precision, PRECISIONS) == "fp32":
        return contextlib.nullcontext()
    warn_if_emulated(precision, device_type)
    return torch.autocast(device_type, dtype=DTYPES[precision])


def name(dtype: torch.dtype) -> str:
    """torch dtype -> its precision name ("fp32", "bf16", "fp16")."""
    for key, value in DTYPES.items():
        if value == dtype:
            return key
    raise ValueError(f"no compute precision for {dtype}; use one of {PRECISIONS}")
