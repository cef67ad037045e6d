"""Helpers to build the golden fixtures' networks (shared by the core, loss and weights tests)."""
from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import torch

from cugd_core.config import CUGDConfig
from cugd_core.unet import CUGDDenoiser
from tests._paths import GOLDEN


@lru_cache(maxsize=None)
def fixture(name: str):
    return np.load(GOLDEN / f"{name}.npz")


def golden_state_dict(name: str = "golden_net_small") -> dict[str, torch.Tensor]:
    """The fixture's weights, keyed like our module (= the authors' keys without `denoise_fn.`)."""
    z = fixture(name)
    return {k[2:]: torch.from_numpy(z[k].astype(np.float32)) for k in z.files if k.startswith("w/")}


def golden_config(name: str = "golden_net_small") -> CUGDConfig:
    return CUGDConfig.from_authors(json.loads(str(fixture(name)["config_json"])))


def golden_net(name: str = "golden_net_small") -> CUGDDenoiser:
    net = CUGDDenoiser(golden_config(name)).eval()
    net.load_state_dict(golden_state_dict(name), strict=True)
    return net


def t(z, key: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(z[key]))
