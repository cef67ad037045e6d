"""The user's exposure control of the enhanced image (issue 19): EV and a brightness reference.

Not to be confused with `exposure.py`, which scales the *condition* (the dark input) for models
trained with `CUGDConfig.cond_exposure`: that is part of the model, fixed by its card. This module
acts on the *output*: one gain per image on a highlight-preserving curve in linear light, chosen by
the user (`exposure` EV, `brightness_reference`) or, for frame sequences, by a running reference.
`bench/bench_exposure.py` measured it against scaling the condition (see bench/README.md). EV 0
without a reference leaves the output bit for bit alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .exposure import condition_gain, linear_to_srgb, srgb_to_linear

LUMA = (0.2126, 0.7152, 0.0722)  # Rec. 709 / sRGB primaries: luminance of linear RGB
EV_LIMIT = 8.0  # gains searched within +-8 stops


def luminance(x: torch.Tensor) -> torch.Tensor:
    """Linear-light luminance `[B,1,H,W]` of images `[B,3,H,W]` in [-1,1] (sRGB-encoded)."""
    lin = srgb_to_linear((x.float().clamp(-1, 1) + 1) / 2)
    return (lin * lin.new_tensor(LUMA).reshape(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def mean_luminance(x: torch.Tensor) -> torch.Tensor:
    """Mean linear luminance `[B]` of images `[B,3,H,W]` in [-1,1]."""
    return luminance(x).mean(dim=(1, 2, 3))


def highlight_curve(v: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """`g v / (1 + (g - 1) v)` on linear `v` in [0,1]: slope `g` in the shadows, 1 stays 1 (no clipping).

    gain broadcasts against v; g < 1 darkens with the same shape (the curve of 1/g, mirrored).
    """
    return gain * v / (1 + (gain - 1) * v)


def apply_output_gain(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Images `[B,3,H,W]` in [-1,1], brightened by `gain` `[B]` in linear light, back in [-1,1].

    The curve acts on each pixel's largest linear channel and scales all three alike, so the
    channel ratios (hue and saturation) are kept and no channel passes 1.
    """
    lin = srgb_to_linear((x.float().clamp(-1, 1) + 1) / 2)
    peak = lin.amax(dim=1, keepdim=True)
    ratio = highlight_curve(peak, gain.reshape(-1, 1, 1, 1).to(lin)) / peak.clamp(min=1e-8)
    return linear_to_srgb(lin * ratio) * 2 - 1


def output_gain_for(x: torch.Tensor, target: torch.Tensor, iters: int = 32) -> torch.Tensor:
    """Gain `[B]` for `apply_output_gain` that brings each image's mean luminance to `target` `[B]`.

    The mean grows monotonically with the gain, so a bisection on log2(gain) within +-EV_LIMIT
    finds it (an unreachable target gives the limit).
    """
    lo = torch.full_like(target, -EV_LIMIT, dtype=torch.float32)
    hi = torch.full_like(target, EV_LIMIT, dtype=torch.float32)
    for _ in range(iters):
        mid = (lo + hi) / 2
        low = mean_luminance(apply_output_gain(x, 2.0 ** mid)) < target
        lo, hi = torch.where(low, mid, lo), torch.where(low, hi, mid)
    return 2.0 ** ((lo + hi) / 2)


def adjust_exposure(x: torch.Tensor, ev: float | torch.Tensor = 0.0,
                    reference: float | torch.Tensor | None = None) -> torch.Tensor:
    """The exposure control: images `[B,3,H,W]` in [-1,1] brought to a reference, then `ev` stops brighter.

    reference: a linear mean luminance to match (`reference_luminance` of an image; `[B]`, `[1]` or a
    number), or None to keep the model's brightness. ev: stops, a number or `[B]`: the shadows and
    mid-tones get 2^ev times the light, highlights roll off towards white (`highlight_curve`, whose
    gains multiply: the reference's gain and the ev's make one curve). EV 0 without a reference
    returns `x` itself.
    """
    gain = 2.0 ** torch.as_tensor(ev, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
    if reference is None:
        if not bool(gain.ne(1).any()):
            return x
    else:
        target = torch.as_tensor(reference, dtype=torch.float32, device=x.device).reshape(-1)
        if target.numel() not in (1, x.shape[0]):
            raise ValueError(f"{x.shape[0]} images but {target.numel()} brightness references; give one, or one per image")
        gain = gain * output_gain_for(x, target.expand(x.shape[0]).clamp(1e-6, 1.0))
    return apply_output_gain(x, gain).to(x.dtype)


def references_for(reference, n: int) -> list[float] | None:
    """None, a number or `n` numbers (mean luminances, e.g. a `[B]` tensor) -> None or one float per image."""
    if reference is None:
        return None
    values = torch.as_tensor(reference, dtype=torch.float32).reshape(-1).tolist()
    if len(values) not in (1, n):
        raise ValueError(f"{n} images but {len(values)} brightness references; give one, or one per image")
    return values * n if len(values) == 1 else values


def reference_luminance(image: torch.Tensor) -> torch.Tensor:
    """Mean luminance `[B]` of reference image(s) `[B,3,H,W]` in [-1,1], checked to be images."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3 or image.numel() == 0:
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise ValueError(f"the brightness reference must be an RGB image [B,3,H,W], got {shape}")
    if not torch.isfinite(image).all():
        raise ValueError("the brightness reference contains NaN or infinite values")
    return mean_luminance(image)


MID_GREY = 0.18  # linear mean of a normal exposure: how many stops an input lies below it


@dataclass(frozen=True)
class CardExposure:
    """The output exposure a model's card prescribes (`cugd_exposure` metadata): `ev + per_stop * stops`
    EV per image, `stops` being how far the input lies below a normal exposure (log2 of the linear gain
    that brings its mean to `MID_GREY`, within `exposure.condition_gain`'s -2..+6).

    Fitted on training pairs at full size (`bench/card_exposure.py`): a model can be too dark or too
    bright on average by a fraction of a stop that varies with how dark the input was; the card
    corrects that part where the user chose no brightness reference.
    """

    ev: float = 0.0
    per_stop: float = 0.0

    def __post_init__(self):
        for name in ("ev", "per_stop"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) > EV_LIMIT:
                raise ValueError(f"the card exposure's {name} must be a number within +-{EV_LIMIT:g}, got {v!r}")

    def ev_for(self, condition: torch.Tensor) -> torch.Tensor:
        """EV `[B]` for dark images `[B,3,H,W]` in [-1,1] (whole, unpadded)."""
        stops = torch.log2(condition_gain(condition, MID_GREY))
        return (self.ev + self.per_stop * stops).clamp(-EV_LIMIT, EV_LIMIT)


STEADY_MEMORY = 0.9  # weight of the past in the running brightness reference of a frame sequence


def running_reference(means: torch.Tensor, memory: float = STEADY_MEMORY, start: float | None = None) -> torch.Tensor:
    """Exponential moving average `[T]` of per-frame mean luminances `[T]`, in frame order.

    Frame t's reference is `memory * ref[t-1] + (1 - memory) * means[t]` (ref[-1] = `start`, or the
    first frame's own mean): brightness follows a real change of the scene within a few frames but
    not the frame-to-frame jitter of the model's guess.
    """
    out, ref = [], start
    for m in means.float().reshape(-1).tolist():
        ref = m if ref is None else memory * ref + (1 - memory) * m
        out.append(ref)
    return torch.tensor(out, dtype=torch.float32)


@dataclass(frozen=True)
class ExposureControl:
    """The user's exposure choice for a batch: `ev` stops on top of a brightness `reference`.

    reference: mean linear luminance to match, `[B]` or `[1]` (`reference_luminance` of an image),
    or None for the model's own. steady: the batch is a frame sequence; without a reference each
    frame is brought to the running reference of the frames so far (`running_reference`).
    """

    ev: float | torch.Tensor = 0.0  # a number, or `[B]` once a card's exposure is added (`with_card`)
    reference: torch.Tensor | None = None
    steady: bool = False

    @property
    def identity(self) -> bool:
        return self.reference is None and not self.steady and not bool(torch.as_tensor(self.ev).ne(0).any())

    def with_card(self, model, condition: torch.Tensor) -> "ExposureControl":
        """This choice with the model card's exposure (`model.card_exposure`, a `CardExposure`) added to
        `ev` for dark images `[B,3,H,W]` in [-1,1]; unchanged when the card has none or a brightness
        reference sets the brightness. Adds, so it is called once, on the user's own choice: where a
        trajectory starts (`session.start`)."""
        card = getattr(model, "card_exposure", None)
        if card is None or self.reference is not None:
            return self
        return replace(self, ev=card.ev_for(condition.float()).cpu() + self.ev)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Images `[B,3,H,W]` in [-1,1] -> the same with the chosen exposure (`x` itself when identity)."""
        if self.identity:
            return x
        reference = self.reference
        if reference is None and self.steady:
            reference = running_reference(mean_luminance(x)).to(x.device)
        return adjust_exposure(x, self.ev, reference)
