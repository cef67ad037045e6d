"""Model configuration of the CUGD denoiser.

`CUGDConfig` is the single source of truth for the network's shape. It reads and writes the
vocabulary of the authors' test JSON (`in_channel, out_channel, inner_channel, norm_groups,
channel_multiplier, attn_res, image_size, res_blocks, dropout`) so that their checkpoints build
with their own configuration, and it serialises to a flat JSON string for `.safetensors` metadata.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

AUTHORS_KEYS = ("in_channel", "out_channel", "inner_channel", "norm_groups", "channel_multiplier",
                "attn_res", "image_size", "res_blocks", "dropout")
# our own fields: their defaults are the authors' network, so their checkpoints and fixtures are unchanged
OWN_KEYS = ("with_uncertainty_head", "attn_kv_grid", "cond_exposure", "cond_exposure_strength", "prediction")
# fields that change no tensor: one set of weights serves every value (fine-tuning may switch them)
TENSOR_FREE_KEYS = ("attn_kv_grid", "cond_exposure", "cond_exposure_strength", "prediction")
# What the network's 3 output channels mean (`CUGDConfig.prediction`); samplers always receive eps.
#   eps: the noise (the authors'); x0: the clean image; residual: the clean image minus the
#   condition the network sees, so that detail the input has passes through unchanged and the
#   network spends itself on noise, tone and colour (DnCNN's residual learning, in x0 space).
PREDICTIONS = ("eps", "x0", "residual")


@dataclass(frozen=True)
class CUGDConfig:
    """Shape of the SR3-style UNet with the CUIE prior encoder (SPEC section 2.2).

    Level `i` has `inner_channel * channel_multiplier[i]` channels and nominal resolution
    `image_size / 2**i`; it has attention iff that resolution is in `attn_res`. CUIE's guidance
    only fits level 2, so `attn_res` must be `[image_size // 4]`.
    """

    in_channel: int = 6
    out_channel: int = 3
    inner_channel: int = 64
    norm_groups: int = 32
    channel_multiplier: tuple[int, ...] = (1, 1, 2, 2, 4)
    attn_res: tuple[int, ...] = (32,)
    image_size: int = 128
    res_blocks: int = 2
    dropout: float = 0.0
    with_uncertainty_head: bool = field(default=True, compare=False)
    # Keys and values of every attention average-pooled to at most this many positions per side
    # (0: all H*W positions, the authors'). The cost then grows linearly with the pixels and the
    # attention sees the same number of keys at any size as on its training crops.
    attn_kv_grid: int = 0
    # Linear-light mean that the dark condition is scaled towards before the network (0: off, the
    # authors'); one gain per image (`exposure.normalise_condition`), so the network starts near a
    # normal exposure instead of from anywhere in x0.02..x0.25 (and beyond, on real photos).
    cond_exposure: float = 0.0
    # How far towards it, in log brightness: 1 brings every image to exactly `cond_exposure` (its own
    # brightness is lost, and with it a cue to the scene's true brightness); 0.75 keeps a quarter of
    # the log distance, so the original exposure stays recoverable from the input.
    cond_exposure_strength: float = 1.0
    # What the network predicts (`PREDICTIONS`); "eps" is the authors'. The others are converted to
    # eps inside `CUGDDenoiser.forward`, so every sampler serves every model, and a one-step
    # sample is the network's clean-image estimate instead of a 30x amplification of its noise error.
    prediction: str = "eps"

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_multiplier", tuple(int(m) for m in self.channel_multiplier))
        object.__setattr__(self, "attn_res", tuple(int(r) for r in self.attn_res))
        problems = []
        if self.in_channel != 6 or self.out_channel != 3:
            problems.append("CUGD takes [condition, x_t] (6 channels) and predicts 3 channels of noise")
        if self.inner_channel % 32:
            problems.append(f"inner_channel={self.inner_channel} must be a multiple of 32 "
                            "(CUIE's attention GroupNorms use 32 groups)")
        if len(self.channel_multiplier) < 3:
            problems.append("channel_multiplier needs at least 3 levels (CUIE guidance enters at level 2)")
        for i, m in enumerate(self.channel_multiplier):
            if (self.inner_channel * m) % self.norm_groups:
                problems.append(f"level {i} has {self.inner_channel * m} channels, not divisible by "
                                f"norm_groups={self.norm_groups}")
        if tuple(self.attn_res) != (self.image_size // 4,):
            problems.append(f"attn_res must be [image_size/4] = [{self.image_size // 4}] "
                            f"(attention only at level 2, where CUIE's guidance fits), got {list(self.attn_res)}")
        if self.res_blocks < 1:
            problems.append("res_blocks must be >= 1")
        if self.attn_kv_grid < 0:
            problems.append(f"attn_kv_grid must be >= 0 (0 = full attention), got {self.attn_kv_grid}")
        if not 0.0 <= self.cond_exposure < 1.0:
            problems.append(f"cond_exposure must be in [0, 1) (0 = off), got {self.cond_exposure}")
        if not 0.0 < self.cond_exposure_strength <= 1.0:
            problems.append(f"cond_exposure_strength must be in (0, 1], got {self.cond_exposure_strength}")
        if self.prediction not in PREDICTIONS:
            problems.append(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if problems:
            raise ValueError("invalid CUGD config: " + "; ".join(problems))

    # -- derived ------------------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.channel_multiplier)

    def level_channels(self, i: int) -> int:
        return self.inner_channel * self.channel_multiplier[i]

    def level_has_attention(self, i: int) -> bool:
        return self.image_size // (2 ** i) in self.attn_res

    @property
    def guidance_channels(self) -> int:
        """Channels of CUIE's output `q_inner` (= channels of level 2)."""
        return self.level_channels(2)

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (exact x2 up-sampling at every level)."""
        return 2 ** (self.num_levels - 1)

    def same_tensors(self, other: "CUGDConfig") -> bool:
        """Whether `other` builds the same tensors: equal but for `TENSOR_FREE_KEYS` (the uncertainty
        head is never compared: a file may have it or not)."""
        return replace(other, **{k: getattr(self, k) for k in TENSOR_FREE_KEYS}) == self

    # -- (de)serialisation ----------------------------------------------------------------------
    @classmethod
    def from_authors(cls, cfg: Mapping[str, Any]) -> "CUGDConfig":
        """Build from the authors' `model.unet` block (plus `image_size` from `diffusion`).

        Accepts the whole test JSON too. A missing or null `norm_groups` means 32, as in their code.
        """
        if "model" in cfg:  # a whole test JSON
            model = cfg["model"]
            unet = dict(model.get("unet", {}))
            unet.setdefault("image_size", model.get("diffusion", {}).get("image_size", 128))
            cfg = unet
        unknown = set(cfg) - set(AUTHORS_KEYS) - set(OWN_KEYS)
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; expected the authors' vocabulary "
                             f"{list(AUTHORS_KEYS)} or {list(OWN_KEYS)}")
        kw = {k: cfg[k] for k in AUTHORS_KEYS + OWN_KEYS if k in cfg and cfg[k] is not None}
        if "with_uncertainty_head" in kw:
            kw["with_uncertainty_head"] = bool(kw["with_uncertainty_head"])
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channel_multiplier"] = list(self.channel_multiplier)
        d["attn_res"] = list(self.attn_res)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CUGDConfig":
        return cls.from_authors(json.loads(text))


RELEASED = CUGDConfig()  # the authors' released configuration (SPEC 3.3)
