"""Image -> encoded (edge, semantic) priors, with a choice of speed; priors from existing masks.

Modes (`extract_priors(..., mode=)`):
  * `"exact"`: the authors' generator settings (SPEC 5.1) with the reorganised mask decoder
    (`SamPromptPredictor`, float32 re-association only) and no RLE post-processing; the same kept
    masks and 8-bit maps as segment-anything's generator (bench/bench_priors.py measures it).
  * `"reference"`: like exact, but the mask decoder runs as segment-anything's own module
    (bit-identical logits to `SamPredictor`); slower, for verification.
  * `"fast"`: a 6x6 prompt grid instead of 24x24, otherwise the same; on a 600x400 photo with
    MobileSAM it runs in under 5 s on this 2-core CPU and its maps differ from exact mode by a mean
    absolute 0.013 (semantic) / 0.020 (edge) (bench/bench_priors.py).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..choices import check_choice
from ..imageops import as_rgb_u8
from .generator import AUTHORS, GeneratorSettings, MaskSet, generate_masks
from .loading import as_sam
from .maps import NO_STRUCTURE, PriorWarning, encode_prior, max_maps, maps_from_probs, normalize_map
from .sam_predictor import SamPromptPredictor


@dataclass(frozen=True)
class PriorMode:
    """How to extract: generator settings and mask-decoder path ("folded" or "module")."""

    settings: GeneratorSettings
    decoder: str = "folded"


# 6x6 prompts: the image encoder (~1.8 s of one core for MobileSAM) plus 36 decoder passes fit 5 s
# even on one core; 8x8 halves the deviation from exact but takes ~6 s of one core (bench_priors.py).
FAST = GeneratorSettings(points_per_side=6)
MODES = {
    "fast": PriorMode(FAST, "folded"),
    "exact": PriorMode(AUTHORS, "folded"),
    "reference": PriorMode(AUTHORS, "module"),
}
PRIOR_MODES = ("fast", "exact")  # what users choose (CLI, nodes, training); "reference" only verifies exact


def _image(image) -> np.ndarray:
    """uint8 `[H,W,3]` from any image array (gray, RGBA, 16-bit, float, ComfyUI `[1,H,W,3]`)."""
    if isinstance(image, torch.Tensor) or isinstance(image, np.ndarray):
        if image.ndim == 4:
            if image.shape[0] != 1:
                raise ValueError(f"extract_priors takes one image, got a batch of {image.shape[0]}: loop over it")
            image = image[0]
    return as_rgb_u8(image)


def _mode(mode) -> PriorMode:
    if isinstance(mode, PriorMode):
        return mode
    return MODES[check_choice("mode", mode, sorted(MODES))]


def generate(image, sam, mode="exact", progress=None) -> MaskSet:
    """The kept masks of `image` (any image array) with `sam` (a `Sam`, wrapper, or checkpoint path)."""
    m = _mode(mode)
    predictor = SamPromptPredictor(as_sam(sam), decoder=m.decoder)
    try:
        return generate_masks(predictor, _image(image), m.settings, progress=progress)
    finally:
        predictor.reset_image()


def maskset_maps(masks: MaskSet, degenerate: str = "zeros") -> tuple[torch.Tensor, torch.Tensor]:
    """(edge, semantic) maps `[H,W]` in [0,1] of a generator result (SPEC 5.2-5.3)."""
    h, w = masks.segmentation.shape[-2:]
    if len(masks) == 0:
        warnings.warn(f"no mask survived: edge and semantic priors are {NO_STRUCTURE}", PriorWarning, stacklevel=2)
        z = torch.zeros(h, w)
        return z, z.clone()
    e_max, p_max = max_maps(masks.iter_logits())
    return (normalize_map(e_max, name="edge", degenerate=degenerate).cpu(),
            normalize_map(p_max, name="semantic", degenerate=degenerate).cpu())


def extract_prior_maps(image, sam, mode="exact", *, progress=None, degenerate: str = "zeros"):
    """(edge, semantic) float32 `[H,W]` maps in [0,1] before encoding, plus the `MaskSet`."""
    masks = generate(image, sam, mode, progress)
    edge, sem = maskset_maps(masks, degenerate)
    return edge, sem, masks


def extract_priors(image, sam, mode="exact", *, progress=None):
    """Encoded priors of one image: `(edge, semantic)`, float32 tensors `[3,H,W]` in [0,1].

    `image`: uint8 `[H,W,3]` RGB (gray `[H,W]`, RGBA, 16-bit and float images are converted);
    `sam`: a segment-anything `Sam` (MobileSAM too), a wrapper holding one, or a checkpoint path;
    `mode`: "exact", "fast" or "reference" (module docstring).
    """
    edge, sem, _ = extract_prior_maps(image, sam, mode, progress=progress)
    return encode_prior(edge), encode_prior(sem)


def priors_from_masks(masks, *, threshold: float = 0.5):
    """Encoded priors from masks made elsewhere (a ComfyUI MASK batch, any segmentation output).

    `masks`: `[N,H,W]` (the N region masks of one image) or `[B,N,H,W]` (B images), values in [0,1]
    (binary or soft). Each mask value is read as SAM's probability `sigmoid(logit)`: the semantic
    map is the normalised pixel-wise max of the masks, the edge map the Sobel magnitude of each mask
    on its own boundary band (`mask > threshold` plays the role of `logits > 0`), border zeroed,
    max over masks, normalised; both are viridis-encoded as for SAM masks.
    Returns `(edge, semantic)` float32 tensors `[3,H,W]` (or `[B,3,H,W]`).
    """
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim == 4:
        pairs = [priors_from_masks(x, threshold=threshold) for x in m]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    if m.ndim != 3:
        raise ValueError(f"masks must be [N,H,W] or [B,N,H,W], got shape {tuple(m.shape)}")
    if m.dtype == torch.bool:
        m = m.float()
    elif not m.is_floating_point():
        m = m.float() / (255.0 if m.dtype == torch.uint8 else float(m.max().clamp(min=1)))
    prob = m.float().clamp(0, 1)
    h, w = prob.shape[-2:]
    if prob.shape[0] == 0:
        warnings.warn(f"no mask: edge and semantic priors are {NO_STRUCTURE}", PriorWarning, stacklevel=2)
        z = torch.zeros(h, w)
        return encode_prior(z), encode_prior(z)
    e_max = p_max = None
    for i in range(0, prob.shape[0], 16):
        p = prob[i:i + 16]
        e = maps_from_probs(p, p > threshold).amax(0)
        e_max = e if e_max is None else torch.maximum(e_max, e)
        p_max = p.amax(0) if p_max is None else torch.maximum(p_max, p.amax(0))
    edge = normalize_map(e_max, name="edge")
    sem = normalize_map(p_max, name="semantic")
    return encode_prior(edge.cpu()), encode_prior(sem.cpu())
