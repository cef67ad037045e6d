"""The CUGD denoiser: an SR3-style UNet whose level-2 attentions are steered by CUIE (SPEC 2).

Parameter names are the authors' (their checkpoint keys minus the `denoise_fn.` prefix), so their
state dicts load without renaming: `noise_level_mlp`, `downs.N`, `mid.N`, `ups.N`, `final_conv`,
`var_conv` (uncertainty head) and CUIE's `conv_query*`/`atten_q*` at the root.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, residual_add
from .config import CUGDConfig
from .cuie import CUIE


def feature_format(x: torch.Tensor) -> torch.memory_format:
    """Layout of the UNet's features: channels_last (NHWC) in bf16/fp16, the default layout in fp32.

    oneDNN's CPU convolutions in bf16 are 2-3x faster on NHWC, and the attention's [B,HW,C] token
    view is then free. In fp32 the gain is small, and CPU GroupNorm's NHWC kernel accumulates its
    statistics naively (4e-5 error at 608x416, 2e-2 on inputs with a large mean), which would break
    the float32 parity with the authors.
    """
    low = x.dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled(x.device.type)
    return torch.channels_last if low else torch.contiguous_format


def convert_prediction(raw: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor, prediction: str,
                       output: str) -> torch.Tensor:
    """The network's output `raw` `[B,3,H,W]` (meaning `prediction`) as `output` ("eps" or "x0").

    x: its input `[B,6,H,W]` = [condition, x_t]; gamma `[B,1]` = sqrt(alpha_bar), so that
    x_t = gamma x0 + sqrt(1 - gamma^2) eps. Unchanged (the same tensor) when the two agree.
    """
    if prediction == output:
        return raw
    g = gamma.to(raw.dtype).reshape(-1, 1, 1, 1)
    s = (1 - g * g).clamp(min=1e-12).sqrt()
    x_t = x[:, 3:]
    if prediction == "eps":  # output x0
        return (x_t - s * raw) / g
    x0 = raw + x[:, :3] if prediction == "residual" else raw
    return x0 if output == "x0" else (x_t - g * x0) / s


class NoiseLevelEncoding(nn.Module):
    """Sinusoidal encoding of the continuous noise level gamma: `[B,1]` -> `[B,1,dim]` (sin block first)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, gamma: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(1e4) * torch.arange(half, dtype=gamma.dtype, device=gamma.device) / half)
        arg = gamma.reshape(-1, 1, 1) * freqs
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class Block(nn.Module):
    """GroupNorm -> Swish -> Dropout/Identity -> Conv3x3 (indices 0..3 as in the checkpoint)."""

    def __init__(self, cin: int, cout: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.block = nn.Sequential(nn.GroupNorm(groups, cin), nn.SiLU(),
                                   nn.Dropout(dropout) if dropout else nn.Identity(),
                                   nn.Conv2d(cin, cout, 3, padding=1))

    def forward(self, x):
        norm, act, drop, conv = self.block
        h = norm(x)  # a new tensor: Swish can overwrite it when no autograd graph is recorded
        h = F.silu(h, inplace=True) if not torch.is_grad_enabled() else act(h)
        return conv(drop(h))


class NoiseInjection(nn.Module):
    """Per-channel shift from the noise embedding: a plain Linear, no activation before it."""

    def __init__(self, emb_dim: int, cout: int):
        super().__init__()
        self.noise_func = nn.Sequential(nn.Linear(emb_dim, cout))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: a layer's fresh output `[B,C,H,W]` (overwritten when no autograd graph is recorded)."""
        return residual_add(x, self.noise_func(emb).reshape(x.shape[0], -1, 1, 1))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        # SR3's Swish+Linear head: present in every checkpoint but never called (dead weights).
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout))
        self.noise_func = NoiseInjection(emb_dim, cout)
        self.block1 = Block(cin, cout, groups)
        self.block2 = Block(cout, cout, groups, dropout)
        self.res_conv = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.block2(self.noise_func(self.block1(x), emb))
        return residual_add(h, self.res_conv(x))


class ResBlockAttn(nn.Module):
    """ResBlock, then (optionally) attention; `cross=True` takes queries from the CUIE guidance."""

    def __init__(self, cin, cout, emb_dim, groups, dropout, attn: bool, cross: bool = False, kv_grid: int = 0):
        super().__init__()
        self.res_block = ResBlock(cin, cout, emb_dim, groups, dropout)
        self.cross = cross
        if attn:
            self.attn = Attention(cout, groups, kv_grid)

    def forward(self, x, emb, guidance=None):
        x = self.res_block(x, emb)
        if hasattr(self, "attn"):
            x = self.attn(x, guidance if self.cross else None)
        return x


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class CUGDDenoiser(nn.Module):
    """Predicts the noise in x_t given the dark condition, gamma and the SAM priors.

    `forward(x [B,6,H,W], gamma [B,1], edge [B,3,H,W], semantic [B,3,H,W]) -> eps [B,3,H,W]`,
    with `x = cat[condition, x_t]` in [-1,1] and priors in [0,1]. Pass `guidance=self.cuie(edge,
    semantic)` instead of the priors to reuse CUIE across steps. H and W must be multiples of
    `config.size_multiple` (pad with `imageops.pad_to_multiple`).
    """

    # the sampler this model's card recommends ("ddpm"/"ddim"; sampler "auto" picks it); None: the authors' DDPM
    preferred_sampler: str | None = None
    # the fewest sampling steps its card says give a valid image (`cugd_min_steps`); None: no limit known
    min_steps: int | None = None
    # the step count its card recommends (`cugd_steps`; what steps None/0 mean); None: `session.DEFAULT_STEPS`
    default_steps: int | None = None
    # the output exposure its card prescribes (`cugd_exposure`, `exposure_control.CardExposure`); None: none
    card_exposure = None

    def __init__(self, config: CUGDConfig):
        super().__init__()
        self.config = config
        c0, g, p, r, kv = (config.inner_channel, config.norm_groups, config.dropout, config.res_blocks,
                           config.attn_kv_grid)
        levels = config.num_levels
        self.noise_level_mlp = nn.Sequential(NoiseLevelEncoding(c0), nn.Linear(c0, 4 * c0), nn.SiLU(),
                                             nn.Linear(4 * c0, c0))

        downs: list[nn.Module] = [nn.Conv2d(config.in_channel, c0, 3, padding=1)]
        skip_ch = [c0]
        ch = c0
        for i in range(levels):
            cout, attn = config.level_channels(i), config.level_has_attention(i)
            for j in range(r):
                downs.append(ResBlockAttn(ch, cout, c0, g, p, attn, cross=attn and j == 0, kv_grid=kv))
                skip_ch.append(cout)
                ch = cout
            if i < levels - 1:
                downs.append(Downsample(ch))
                skip_ch.append(ch)
        self.downs = nn.ModuleList(downs)
        self.mid = nn.ModuleList([ResBlockAttn(ch, ch, c0, g, p, attn=True, kv_grid=kv),
                                  ResBlockAttn(ch, ch, c0, g, p, attn=False)])
        ups: list[nn.Module] = []
        for i in reversed(range(levels)):
            cout, attn = config.level_channels(i), config.level_has_attention(i)
            for j in range(r + 1):
                ups.append(ResBlockAttn(ch + skip_ch.pop(), cout, c0, g, p, attn, cross=attn and j == 0, kv_grid=kv))
                ch = cout
            if i > 0:
                ups.append(Upsample(ch))
        self.ups = nn.ModuleList(ups)
        self.final_conv = Block(ch, config.out_channel, g)
        if config.with_uncertainty_head:  # inherited from GSAD; the samplers never use it
            self.var_conv = nn.Sequential(nn.Conv2d(c0, c0, 3, padding=1), nn.ELU(), nn.Conv2d(c0, c0, 3, padding=1),
                                          nn.ELU(), nn.Conv2d(c0, 3, 3, padding=1), nn.ELU())
        # CUIE's layers sit at the root like the authors' (conv_query1, atten_q1q1, ...); the
        # CUIE object itself is kept unregistered so its parameters are not listed twice.
        cuie = CUIE(config)
        for name, child in cuie.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "_cuie", cuie)

    # -- parts ---------------------------------------------------------------------------------
    def cuie(self, edge: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        """Guidance `q_inner` `[B, C0*m[2], H/4, W/4]` from the priors; independent of x_t and gamma."""
        return self._cuie(edge, semantic)

    def noise_embedding(self, gamma: torch.Tensor) -> torch.Tensor:
        """gamma `[B,1]` -> `[B,1,C0]`."""
        return self.noise_level_mlp(gamma)

    def features(self, x: torch.Tensor, gamma: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """Last up-path features `[B,C0,H,W]` (input of final_conv and of the uncertainty head)."""
        m = self.config.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"H and W must be multiples of {m}, got {tuple(x.shape[-2:])}; "
                             "pad with cugd_core.imageops.pad_to_multiple")
        emb = self.noise_embedding(gamma.to(x.dtype))
        fmt = feature_format(x)
        guidance = guidance.contiguous(memory_format=fmt)
        feats = []
        h = x.contiguous(memory_format=fmt)
        for layer in self.downs:
            h = layer(h, emb, guidance) if isinstance(layer, ResBlockAttn) else layer(h)
            feats.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.ups:
            if isinstance(layer, ResBlockAttn):
                joined = torch.cat([h, feats.pop()], dim=1)
                h = None  # the cat holds a copy: free the up-path input before the block runs (peak memory)
                h = layer(joined, emb, guidance)
            else:
                h = layer(h)
        return h

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, edge: torch.Tensor | None = None,
                semantic: torch.Tensor | None = None, *, guidance: torch.Tensor | None = None,
                output: str = "eps") -> torch.Tensor:
        """x `[B,6,H,W]` = [condition, x_t], gamma `[B,1]` -> eps `[B,3,H,W]` (`output="x0"`: the
        clean-image estimate instead), whatever the model's `config.prediction`."""
        if guidance is None:
            if edge is None or semantic is None:
                raise ValueError("pass the priors (edge, semantic) or a precomputed guidance=model.cuie(edge, semantic)")
            guidance = self.cuie(edge, semantic)
        raw = self.final_conv(self.features(x, gamma, guidance))
        raw = raw.to(x.dtype, memory_format=torch.contiguous_format)  # float32 under bf16 autocast
        return convert_prediction(raw, x, gamma, self.config.prediction, output)

    def uncertainty(self, x, gamma, guidance) -> torch.Tensor:
        """The unused uncertainty head `[B,3,H,W]` (only for parity checks)."""
        if not hasattr(self, "var_conv"):
            raise RuntimeError("this model was built without the uncertainty head")
        return self.var_conv(self.features(x, gamma, guidance))
