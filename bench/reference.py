"""A straightforward reference of the CUGD denoiser, for the benchmark and the parity test.

Written from SPEC section 2 as plain functions over a state dict, the way the authors' code computes
a call: every attention materialises its `[HW, HW]` matrix `softmax(Q^T K / sqrt(C))` with plain
matrix products, CUIE is recomputed on every call and the uncertainty head is computed (and
returned) although nothing uses it. It shares no module code with `cugd_core.unet`, only the
configuration and the parameter names (the authors' keys without `denoise_fn.`), so
`ReferenceDenoiser(model.state_dict(), model.config)` runs the same weights.

Memory: each attention keeps two `[HW/16]^2` float32 matrices alive at level 2 (scores and
their softmax), see `attention_matrix_bytes`.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F

from cugd_core.config import CUGDConfig

CUIE_GROUPS = 32  # CUIE's attention GroupNorms, whatever norm_groups says (SPEC 2.3)


def attention_matrix_bytes(height: int, width: int, dtype_bytes: int = 4) -> int:
    """Bytes of one level-2 attention matrix for an `height x width` input (tokens = HW/16)."""
    tokens = (height // 4) * (width // 4)
    return tokens * tokens * dtype_bytes


class ReferenceDenoiser:
    """`ref(x [B,6,H,W], gamma [B,1], edge, semantic) -> (eps, var)`, each `[B,3,H,W]`."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], config: CUGDConfig):
        self.w = {k: v.detach() for k, v in state_dict.items()}
        self.cfg = config

    # -- building blocks (SPEC 2.3) ------------------------------------------------------------
    def conv(self, x, name, stride=1):
        weight = self.w[f"{name}.weight"]
        return F.conv2d(x, weight, self.w.get(f"{name}.bias"), stride=stride, padding=weight.shape[-1] // 2)

    def gn(self, x, name, groups):
        return F.group_norm(x, groups, self.w[f"{name}.weight"], self.w[f"{name}.bias"], eps=1e-5)

    def block(self, x, name):
        """GN -> Swish -> (Dropout: identity at test) -> Conv3x3; indices 0 and 3 in the checkpoint."""
        h = self.gn(x, f"{name}.block.0", self.cfg.norm_groups)
        return self.conv(h * torch.sigmoid(h), f"{name}.block.3")

    def res_block(self, x, emb, name):
        h = self.block(x, f"{name}.block1")
        shift = F.linear(emb, self.w[f"{name}.noise_func.noise_func.0.weight"],
                         self.w[f"{name}.noise_func.noise_func.0.bias"])  # [B,1,Cout]
        h = h + shift.reshape(x.shape[0], -1, 1, 1)
        h = self.block(h, f"{name}.block2")
        skip = self.conv(x, f"{name}.res_conv") if f"{name}.res_conv.weight" in self.w else x
        return h + skip

    def attention(self, x, name, groups, guidance=None):
        """One head over all positions, the `[HW, HW]` matrix materialised."""
        b, c, h, w = x.shape
        n = self.gn(x, f"{name}.norm", groups)
        q_src = n if guidance is None else self.gn(guidance, f"{name}.norm", groups)
        q = self.conv(q_src, f"{name}.q").reshape(b, c, h * w)
        k = self.conv(n, f"{name}.k").reshape(b, c, h * w)
        v = self.conv(n, f"{name}.v").reshape(b, c, h * w)
        scores = torch.bmm(q.transpose(1, 2), k) / math.sqrt(c)   # [B, HW(query), HW(key)]
        attn = torch.softmax(scores, dim=-1)
        del scores
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, h, w)  # [B,C,HW(query)]
        return x + self.conv(out, f"{name}.out")

    # -- parts ---------------------------------------------------------------------------------
    def noise_embedding(self, gamma):
        d = self.cfg.inner_channel
        half = d // 2
        freqs = torch.exp(-math.log(1e4) * torch.arange(half, dtype=torch.float32, device=gamma.device) / half)
        arg = gamma.reshape(-1, 1, 1).float() * freqs
        pe = torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)
        h = F.linear(pe, self.w["noise_level_mlp.1.weight"], self.w["noise_level_mlp.1.bias"])
        h = h * torch.sigmoid(h)
        return F.linear(h, self.w["noise_level_mlp.3.weight"], self.w["noise_level_mlp.3.bias"])

    def cuie(self, edge, semantic):
        def stem(p, name):
            h = torch.sigmoid(self.conv(p, f"{name}.0"))
            return F.max_pool2d(F.avg_pool2d(h, 2), 2)
        q1, q2 = stem(edge, "conv_query1"), stem(semantic, "conv_query2")
        a = self.attention(q1, "atten_q1q1", CUIE_GROUPS)
        b = self.attention(q2, "atten_q2q2", CUIE_GROUPS)
        c = self.attention(q1, "atten_q1q2", CUIE_GROUPS, guidance=q2)
        return torch.sigmoid(self.conv(torch.cat([a, b, c], dim=1), "conv_query3.0"))

    def res_attn(self, x, emb, name, guidance):
        """ResBlock, then attention if the checkpoint has one here; cross iff guidance is given."""
        x = self.res_block(x, emb, f"{name}.res_block")
        if f"{name}.attn.q.weight" in self.w:
            x = self.attention(x, f"{name}.attn", self.cfg.norm_groups, guidance)
        return x

    def __call__(self, x, gamma, edge, semantic):
        cfg = self.cfg
        levels, r = cfg.num_levels, cfg.res_blocks
        guidance = self.cuie(edge, semantic)  # recomputed every call, as the authors do
        emb = self.noise_embedding(gamma)
        h = self.conv(x, "downs.0")
        skips, i = [h], 1
        for lvl in range(levels):
            for j in range(r):  # the first block of a level with attention cross-attends
                h = self.res_attn(h, emb, f"downs.{i}", guidance if j == 0 else None)
                skips.append(h)
                i += 1
            if lvl < levels - 1:
                h = self.conv(h, f"downs.{i}.conv", stride=2)
                skips.append(h)
                i += 1
        h = self.res_attn(h, emb, "mid.0", None)  # self-attention only
        h = self.res_attn(h, emb, "mid.1", None)
        i = 0
        for lvl in reversed(range(levels)):
            for j in range(r + 1):
                h = self.res_attn(torch.cat([h, skips.pop()], dim=1), emb, f"ups.{i}", guidance if j == 0 else None)
                i += 1
            if lvl > 0:
                h = self.conv(F.interpolate(h, scale_factor=2, mode="nearest"), f"ups.{i}.conv")
                i += 1
        return self.block(h, "final_conv"), self.uncertainty(h)  # the head is computed, never used

    def uncertainty(self, h):
        """The uncertainty head on the last up features `[B,C0,H,W]` -> `[B,3,H,W]`."""
        for i in (0, 2, 4):
            h = F.elu(self.conv(h, f"var_conv.{i}"))
        return h
