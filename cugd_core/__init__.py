"""CUGD core: low-light enhancement by a diffusion model steered by SAM priors of any region.

Plain PyTorch; nothing here imports ComfyUI. Public names are imported lazily so that
`import cugd_core` stays cheap (the ComfyUI pack imports it at start-up).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "CUGDConfig": "config", "RELEASED": "config",
    "CUGDDenoiser": "unet", "CUIE": "cuie",
    "Schedule": "schedule", "RELEASED_SCHEDULE": "schedule",
    "SamplerState": "samplers", "sample": "samplers", "ddpm_step": "samplers", "ddim_step": "samplers",
    "timesteps": "samplers", "init_state": "samplers", "run": "samplers", "make_generators": "samplers",
    "load_denoiser": "weights", "save_safetensors": "weights",
    "prior_maps": "priors", "encode_prior": "priors", "extract_priors": "priors", "load_sam": "priors",
    "priors_from_masks": "priors",
    "load_image": "imageops", "pad_to_multiple": "imageops", "crop": "imageops",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cugd_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
