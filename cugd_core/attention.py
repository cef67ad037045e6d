"""Single-head spatial attention used by the UNet and by CUIE (SPEC 2.3).

One module serves self- and cross-attention: in cross mode the queries come from the guidance
(normalised by the *same* GroupNorm as the features), keys and values from the feature map, and the
residual is added to the features. Attention runs through `scaled_dot_product_attention`, so the
`[HW, HW]` matrix is never materialised (the authors' code allocates two 1 GB matrices per call at
608x416).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """`out = x + Wo(softmax(Q K^T / sqrt(C)) V)`, one head over all `H*W` positions.

    Args:
        channels: C.
        groups: GroupNorm groups (the UNet's `norm_groups`; 32 inside CUIE).
    """

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.q = nn.Conv2d(channels, channels, 1, bias=False)
        self.k = nn.Conv2d(channels, channels, 1, bias=False)
        self.v = nn.Conv2d(channels, channels, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
        """x: `[B,C,H,W]`; guidance (cross mode): `[B,C,H,W]`, same shape as x. Returns `[B,C,H,W]`."""
        b, c, h, w = x.shape
        n = self.norm(x)
        q_src = n if guidance is None else self.norm(guidance)
        if q_src.shape != x.shape:
            raise ValueError(f"cross-attention guidance {tuple(q_src.shape)} must match features {tuple(x.shape)}")
        # [B,C,H,W] -> [B,1,HW,C]: one head, tokens = positions
        q, k, v = (t.flatten(2).transpose(1, 2).unsqueeze(1).contiguous() for t in (self.q(q_src), self.k(n), self.v(n)))
        # contiguous q/k/v: the CPU flash kernel (O(tokens) memory) needs a unit last stride; otherwise
        # SDPA silently falls back to the math path and materialises the [HW, HW] matrix.
        a = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(C), as the authors'
        a = a.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.out(a)
