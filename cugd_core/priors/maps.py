"""Prior maps from mask logits (SPEC 5.2-5.4): per-mask maps, aggregation, viridis encoding.

Per kept mask `i` with full-resolution logits `L_i` `[H,W]`:
  * probability `P_i = sigmoid(L_i)`;
  * edge `E_i = |Sobel(P_i)| * [Sobel(M_i) != 0]`, `M_i = L_i > 0`, zero-padded 3x3 Sobel, then the
    5-pixel image border set to 0.
Aggregation: `semantic = minmax(max_i P_i)`, `edge = minmax(max_i E_i)` (no epsilon); encoding:
viridis index `floor(256 v)` (v = 1 -> 255), colour as `plt.imsave` writes it.

Degenerate maps (SPEC 5.6): when a map is constant (e.g. every mask covers the whole image, so no
edge survives the border) the authors' `0/0` gives NaN, which their PNG shows as black `(0,0,0)`,
a colour the viridis network never sees otherwise. By default we return the map of "no structure"
instead, all zeros (viridis index 0, `(68,1,84)`), and warn with `PriorWarning`;
`degenerate="nan"` reproduces the authors' NaN (and `encode_prior` paints NaN black as they do).
"""
from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ._viridis import VIRIDIS_U8_FLAT

VIRIDIS_U8 = np.asarray(VIRIDIS_U8_FLAT, dtype=np.uint8).reshape(256, 3)
VIRIDIS_U8.setflags(write=False)
BORDER = 5  # pixels zeroed on every side of each edge map

_SOBEL = torch.tensor([[[[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]],
                       [[[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]]])  # [2,1,3,3]: Gx, Gy


NO_STRUCTURE = "viridis(0) everywhere (the map of no structure, value 0)"  # what the warnings say


class PriorWarning(UserWarning):
    """A prior map was degenerate (no mask, or a constant map) and got the documented fallback."""


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _sobel(x: torch.Tensor) -> torch.Tensor:
    """`[n,H,W]` -> Gx, Gy `[n,2,H,W]` (cross-correlation, zero padding 1)."""
    return F.conv2d(x[:, None], _SOBEL.to(device=x.device, dtype=x.dtype), padding=1)


def mask_maps(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mask maps. `logits` float32 `[n,H,W]` -> (edge `[n,H,W]`, probability `[n,H,W]`)."""
    logits = logits.float()
    prob = torch.sigmoid(logits)
    return maps_from_probs(prob, logits > 0), prob


def maps_from_probs(prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Edge maps `[n,H,W]`: Sobel magnitude of the probabilities `prob`, kept on the boundary band
    of the binary `mask` (where its own Sobel response is non-zero), 5-pixel border zeroed."""
    g = _sobel(prob)
    edge = torch.sqrt(g[:, 0] * g[:, 0] + g[:, 1] * g[:, 1])
    boundary = _sobel(mask.to(prob.dtype)).ne(0).any(dim=1)  # exact: small integers
    edge = edge * boundary
    edge[:, :BORDER] = 0
    edge[:, -BORDER:] = 0
    edge[:, :, :BORDER] = 0
    edge[:, :, -BORDER:] = 0
    return edge


def max_maps(logits: torch.Tensor | Iterable[torch.Tensor], chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-wise max over masks of the per-mask maps.

    `logits`: `[N,H,W]` (N >= 1, processed `chunk` masks at a time) or an iterable of such chunks.
    Returns (edge_max, prob_max), float32 `[H,W]` on the logits' device.
    """
    chunks = (logits[i:i + chunk] for i in range(0, logits.shape[0], chunk)) \
        if isinstance(logits, torch.Tensor) else logits
    e_max = p_max = None
    for c in chunks:
        e, p = mask_maps(c)
        e, p = e.amax(0), p.amax(0)
        e_max = e if e_max is None else torch.maximum(e_max, e)
        p_max = p if p_max is None else torch.maximum(p_max, p)
    return e_max, p_max


def normalize_map(x: torch.Tensor, *, name: str = "map", degenerate: str = "zeros") -> torch.Tensor:
    """Min-max normalisation over the whole map, float32, no epsilon (SPEC 5.3).

    A constant map has no normalisation: `degenerate="zeros"` returns zeros and warns,
    `"nan"` returns the authors' `0/0` (NaN everywhere, no warning beyond theirs).
    """
    if degenerate not in ("zeros", "nan"):
        raise ValueError(f"degenerate must be 'zeros' or 'nan', got {degenerate!r}")
    lo, hi = x.min(), x.max()
    if not bool(hi > lo):
        if degenerate == "nan":
            warnings.warn(f"{name} prior is constant: normalised to NaN (authors' 0/0)", PriorWarning,
                          stacklevel=3)
            return torch.full_like(x, float("nan"))
        warnings.warn(f"{name} prior is constant ({float(lo):.4g}): {NO_STRUCTURE}", PriorWarning, stacklevel=3)
        return torch.zeros_like(x)
    return (x - lo) / (hi - lo)


def prior_maps(mask_logits, *, degenerate: str = "zeros"):
    """(edge, semantic) prior maps, float32 `[H,W]` in [0,1], from the kept masks' logits.

    `mask_logits`: float32 numpy array or tensor `[N,H,W]` of full-resolution logits (a mask is
    `logits > 0`). Returns the same kind as the input (numpy in, numpy out; tensors stay on their
    device). No mask (`N = 0`) or a constant map gives zeros and a `PriorWarning` (module docstring).
    """
    is_np = not isinstance(mask_logits, torch.Tensor)
    logits = _as_tensor(mask_logits)
    if logits.ndim == 2:
        logits = logits[None]
    if logits.ndim != 3:
        raise ValueError(f"mask_logits must be [N,H,W], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"mask_logits must be float logits, got {logits.dtype} (binary masks: use "
                         "priors_from_masks)")
    h, w = logits.shape[-2:]
    if logits.shape[0] == 0:
        warnings.warn(f"no mask: edge and semantic priors are {NO_STRUCTURE}", PriorWarning, stacklevel=2)
        edge = sem = torch.zeros(h, w, dtype=torch.float32, device=logits.device)
    else:
        with torch.no_grad():
            e_max, p_max = max_maps(logits)
            edge = normalize_map(e_max, name="edge", degenerate=degenerate)
            sem = normalize_map(p_max, name="semantic", degenerate=degenerate)
    if is_np:
        return edge.cpu().numpy(), sem.cpu().numpy()
    return edge, sem


def viridis_index(map2d) -> torch.Tensor:
    """Colour-table index `floor(256 v)` clipped to 0..255, int64 `[H,W]`; NaN -> -1 (no colour)."""
    v = _as_tensor(map2d).float()
    nan = torch.isnan(v)
    k = torch.floor(v.clamp(0.0, 1.0) * 256.0).clamp_(max=255).long()
    return k.masked_fill_(nan, -1)


def encode_prior_u8(map2d) -> np.ndarray:
    """A map `[H,W]` in [0,1] -> uint8 `[H,W,3]` viridis RGB, the pixels of the authors' PNG.

    NaN pixels are black `(0,0,0)`, as matplotlib's transparent "bad" colour reads back without alpha.
    """
    k = viridis_index(map2d).cpu().numpy()
    rgb = VIRIDIS_U8[np.clip(k, 0, 255)]
    rgb[k < 0] = 0
    return rgb


def constant_prior_u8(h: int, w: int) -> np.ndarray:
    """The viridis colour of a zero map `[H,W,3]`: priors held constant (the no-prior ablation)."""
    return np.broadcast_to(encode_prior_u8(np.zeros((1, 1), np.float32)), (h, w, 3)).copy()


def encode_prior(map2d):
    """The 8-bit viridis encoding the network reads: `[H,W]` -> float32 `[3,H,W]` in [0,1].

    Returns the kind it was given (numpy array, or a tensor on the input's device); NaN -> black.
    """
    rgb = encode_prior_u8(map2d).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    rgb = np.ascontiguousarray(rgb)
    if isinstance(map2d, torch.Tensor):
        return torch.from_numpy(rgb).to(map2d.device)
    return rgb
