"""CUIE: the Context Understanding Injection Encoder (SPEC 2.5).

Turns the two viridis-encoded prior maps into the guidance tensor `q_inner` that the UNet's
level-2 cross-attentions use as their query source. It reads only the priors (not x_t, not gamma),
so a sampler computes it once per image and reuses it for every step.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from .config import CUGDConfig

CUIE_GROUPS = 32  # fixed in the authors' code, whatever norm_groups says


def _prior_stem(inner: int) -> nn.Sequential:
    # conv 5x5 -> sigmoid -> avgpool 2 -> maxpool 2: [B,3,H,W] -> [B,C0,H/4,W/4]
    return nn.Sequential(nn.Conv2d(3, inner, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2), nn.MaxPool2d(2))


class CUIE(nn.Module):
    """Self-attention per prior, semantic-to-edge cross-attention, fused by a 3x3 conv.

    Parameter names follow the authors' checkpoint (`conv_query1/2/3`, `atten_q1q1`, `atten_q2q2`,
    `atten_q1q2`); the module is mounted at the UNet's root so the keys match theirs.
    """

    def __init__(self, config: CUGDConfig):
        super().__init__()
        c0 = config.inner_channel
        self.conv_query1 = _prior_stem(c0)  # edge (structure) branch
        self.conv_query2 = _prior_stem(c0)  # semantic branch
        kv = config.attn_kv_grid
        self.atten_q1q1 = Attention(c0, CUIE_GROUPS, kv)
        self.atten_q2q2 = Attention(c0, CUIE_GROUPS, kv)
        self.atten_q1q2 = Attention(c0, CUIE_GROUPS, kv)
        self.conv_query3 = nn.Sequential(nn.Conv2d(3 * c0, config.guidance_channels, 3, padding=1), nn.Sigmoid())

    def forward(self, edge: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        """edge, semantic: `[B,3,H,W]` in [0,1]. Returns `q_inner` `[B, C0*m[2], H/4, W/4]`."""
        q1 = self.conv_query1(edge)
        q2 = self.conv_query2(semantic)
        fused = torch.cat([self.atten_q1q1(q1), self.atten_q2q2(q2),
                           self.atten_q1q2(q1, guidance=q2)], dim=1)  # queries from semantic
        return self.conv_query3(fused)
