"""Loading and caching the models the nodes share: the CUGD denoiser (`LoadedModel`, the CUGD_MODEL
payload) and Segment-Anything, with ComfyUI's choice of device and precision.

The core loads the files (`cugd_core.weights`, `cugd_core.priors`); this module decides where they
run and keeps the defaults (the pack's model, MobileSAM) loaded once per device.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import comfy.model_management as mm
import torch

from cugd_core import precision, weights
from cugd_core.choices import AUTO
from cugd_core.devices import for_inference
from cugd_core.layout import DEFAULT_MODEL_PATH
from cugd_core.priors import load_sam as core_load_sam

from .comfy_bridge import SAM_FOLDER, compute_device, folder_paths_of, full_path, offload_device

DTYPES = (AUTO, *precision.PRECISIONS)  # the loader's dtype widget: ComfyUI's choice, or one of the core's


def default_model_path() -> str:
    """The model shipped with the pack, or a clear error when the install lacks it."""
    if not DEFAULT_MODEL_PATH.is_file():
        raise FileNotFoundError(f"the pack's default model {DEFAULT_MODEL_PATH} is missing (a broken install?); "
                                "reinstall the pack or choose a model file from models/cugd")
    return str(DEFAULT_MODEL_PATH)


def pick_precision(choice: str, device: torch.device) -> torch.dtype:
    """The compute precision: fp32 on CPU (whatever the CPU: bf16 changes the outputs, and CPUs without
    AVX-512 BF16/AMX emulate it, several times slower); on a GPU bf16 where supported, else fp16 where
    ComfyUI deems it safe, else fp32. An explicit choice wins (bf16 speeds up CPUs with AVX-512 BF16 or
    AMX; elsewhere `cugd_core.precision` warns when it runs)."""
    if choice != AUTO:
        return precision.DTYPES[choice]
    if device.type == "cpu":
        return torch.float32
    if mm.should_use_bf16(device):
        return torch.bfloat16
    if mm.should_use_fp16(device):
        return torch.float16
    return torch.float32


@dataclass(eq=False)
class LoadedModel:
    """The CUGD_MODEL payload: a float32 denoiser, where it runs, at which precision, and whether it
    stays on the compute device between runs."""

    denoiser: Any
    name: str
    load_device: Any
    offload_device: Any
    dtype: Any  # compute precision; the weights stay float32 (half precision runs under autocast)
    keep_loaded: bool = True

    @property
    def config(self):
        return self.denoiser.config

    def size_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.denoiser.parameters())

    @contextlib.contextmanager
    def active(self):
        """The denoiser on the compute device, calls in the block at the chosen precision
        (`cugd_core.precision.autocast`, as the CLI's `--precision`); offloaded afterwards unless kept loaded."""
        if self.load_device.type != "cpu":
            mm.free_memory(self.size_bytes() * 2, self.load_device)
        self.denoiser.to(self.load_device)
        try:
            with precision.autocast(precision.name(self.dtype), self.load_device.type):
                yield self.denoiser
        finally:
            if not self.keep_loaded:
                self.denoiser.to(self.offload_device)
                mm.soft_empty_cache()


def load_model(source, config=None, *, name: str, device: str = AUTO, dtype: str = AUTO,
               keep_loaded: bool = True) -> LoadedModel:
    """`cugd_core.weights.load_denoiser` + ComfyUI's device/dtype choice -> the CUGD_MODEL payload."""
    denoiser = for_inference(weights.load_denoiser(source, config).requires_grad_(False))
    load_device = compute_device(device)
    model = LoadedModel(denoiser, name, load_device, offload_device(), pick_precision(dtype, load_device), keep_loaded)
    if keep_loaded:
        denoiser.to(load_device)
    return model


_DEFAULT_MODELS: dict[str, LoadedModel] = {}


def default_model() -> LoadedModel:
    """The shipped default model with automatic device/dtype, loaded once (for Enhance without a model)."""
    key = str(compute_device(AUTO))
    if key not in _DEFAULT_MODELS:
        _DEFAULT_MODELS[key] = load_model(default_model_path(), name="default")
    return _DEFAULT_MODELS[key]


def load_sam(name: str | None, model_type: str | None = None, device: str = AUTO):
    """A segment-anything `Sam`: `name` in models/sams, or None for MobileSAM (models/sams first,
    then the installed weights package)."""
    path = None if name is None else full_path(SAM_FOLDER, name)
    return core_load_sam(path, model_type=model_type, sam_dirs=folder_paths_of(SAM_FOLDER),
                         device=compute_device(device))


_DEFAULT_SAMS: dict[str, Any] = {}


def default_sam():
    """MobileSAM on the compute device, loaded once (for Enhance without a SAM)."""
    key = str(compute_device(AUTO))
    if key not in _DEFAULT_SAMS:
        _DEFAULT_SAMS[key] = load_sam(None)
    return _DEFAULT_SAMS[key]
