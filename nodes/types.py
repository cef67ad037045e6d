"""Socket types of the pack and the small payloads that travel through them.

Custom types only for objects private to the pack (model, priors, guidance, sampling state). The SAM
socket is named `SAM_MODEL`, the type comfyui_segment_anything and Impact Pack use, so their SAM
loaders connect to our nodes and ours to theirs (the object is a segment-anything `Sam` module).
Payloads are plain dataclasses; tensors in them live on ComfyUI's intermediate device unless noted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comfy_api.latest import io

CUGDModel = io.Custom("CUGD_MODEL")
CUGDPriors = io.Custom("CUGD_PRIORS")
CUGDGuidance = io.Custom("CUGD_GUIDANCE")
CUGDState = io.Custom("CUGD_STATE")
SAMModel = io.Custom("SAM_MODEL")

CATEGORY = "image/enhance/CUGD"


@dataclass
class Priors:
    """SAM region priors of a batch, viridis-encoded as the network expects.

    edge, semantic: float32 `[B,3,H,W]` in [0,1], one pair per image, at the image's own size.
    """

    edge: Any
    semantic: Any
    mode: str = "exact"

    def __post_init__(self):
        if tuple(self.edge.shape) != tuple(self.semantic.shape) or self.edge.ndim != 4 or self.edge.shape[1] != 3:
            raise ValueError(f"priors must be two [B,3,H,W] tensors of one shape, got "
                             f"{tuple(self.edge.shape)} and {tuple(self.semantic.shape)}")

    @property
    def batch(self) -> int:
        return int(self.edge.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.edge.shape[-2]), int(self.edge.shape[-1])


@dataclass
class Guidance:
    """CUIE output for a batch, computed once and reused by every sampling step.

    guidance: `[B, C2, Hp/4, Wp/4]` in the model's dtype, from the priors padded to `padded_hw`.
    hw: the images' size before padding. model_id: `id()` of the denoiser it was computed with.
    priors: the `Priors` it came from (a tiled run encodes each tile's priors itself, once).
    """

    guidance: Any
    hw: tuple[int, int]
    padded_hw: tuple[int, int]
    model_id: int
    priors: Priors

    @property
    def batch(self) -> int:
        return int(self.guidance.shape[0])


@dataclass
class SamplingState:
    """A sampling trajectory that another node may continue (e.g. DDIM steps).

    trajectory: `cugd_core.session.Trajectory` (sampler state, padded condition and priors, CUIE
    guidance, schedule, per-image generators, tile settings, history), on the intermediate device;
    model: the `LoadedModel` that produced it (kept so a continuation uses the same network).
    """

    trajectory: Any
    model: Any

    @property
    def state(self):
        return self.trajectory.state

    @property
    def steps_left(self) -> int:
        return self.trajectory.steps_left
