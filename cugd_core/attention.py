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
        kv_grid: 0 (every position is a key, the authors'), or keys and values average-pooled to at
            most `kv_grid` x `kv_grid` positions (`CUGDConfig.attn_kv_grid`): linear cost in H*W.
    """

    def __init__(self, channels: int, groups: int, kv_grid: int = 0):
        super().__init__()
        self.kv_grid = int(kv_grid)
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
        kv_src = n
        if self.kv_grid and (h > self.kv_grid or w > self.kv_grid):
            # k and v are 1x1 convs without bias, so pooling their input equals pooling them
            kv_src = F.adaptive_avg_pool2d(n, (min(h, self.kv_grid), min(w, self.kv_grid)))
        # [B,C,H,W] -> [B,1,HW,C]: one head, tokens = positions
        q, k, v = (t.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
                   for t in (self.q(q_src), self.k(kv_src), self.v(kv_src)))
        # contiguous q/k/v: the CPU flash kernel (O(tokens) memory) needs a unit last stride; otherwise
        # SDPA silently falls back to the math path and materialises the [HW, HW] matrix.
        # fp32 keeps the flash kernel: blocked fp32 GEMMs + softmax took 1.3-1.7x its CPU time at
        # 4096-15808 tokens (bench/README.md); in bf16 the blocked GEMMs win.
        # (the blocked kernel writes in place, so training, which records a graph, keeps SDPA)
        if q.dtype in (torch.bfloat16, torch.float16) and q.device.type == "cpu" and not torch.is_grad_enabled():
            a = blocked_attention(q.squeeze(1), k.squeeze(1), v.squeeze(1), 1024).unsqueeze(1)
        else:
            a = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(C), as the authors'
        a = a.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return residual_add(self.out(a), x)


def residual_add(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """`fresh + other`, written into `fresh` (a layer's new output) when no autograd graph is being
    recorded and the dtype stays (under bf16 autocast a bf16 output plus a float32 skip must promote):
    one full-size temporary, and its page faults, less per call."""
    if not torch.is_grad_enabled() and torch.result_type(fresh, other) == fresh.dtype:
        return fresh.add_(other)
    return fresh + other


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int = 512) -> torch.Tensor:
    """softmax(q k^T / sqrt(C)) v for `[B,N,C]` inputs, `block` queries at a time (`[block, N]` scores).

    For bf16 on CPU: SDPA's fused CPU kernel gains nothing over float32 on CPUs without AMX, while
    two plain bf16 matrix products per block run at the bf16 GEMM rate. Softmax accumulates in float32
    (its output is rounded to bf16); memory is O(block * N), reused across blocks.
    """
    n, c = q.shape[1], q.shape[2]
    kt = k.transpose(1, 2)
    out = torch.empty_like(q)
    scores = torch.empty(q.shape[0], min(block, n), k.shape[1], dtype=q.dtype, device=q.device)
    for i in range(0, n, block):
        s = scores[:, : min(block, n - i)]
        torch.baddbmm(s, q[:, i:i + block], kt, beta=0, alpha=c ** -0.5, out=s)
        torch.softmax(s, dim=-1, out=s)  # row-wise, in place
        torch.bmm(s, v, out=out[:, i:i + block])
    return out
