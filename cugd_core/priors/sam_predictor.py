"""Point-prompt predictor over any segment-anything `Sam` (vit_b/l/h, MobileSAM's vit_t).

`SamPromptPredictor` computes what segment_anything's `SamPredictor.set_image` +
`predict_torch(..., multimask_output, return_logits=True)` compute, split and reorganised so that the
automatic mask generator can skip work that does not change its result:

* `predict` returns the decoder's **low-resolution** logits (cut to the part of the 256x256 output
  that covers the image); `upscale` turns any subset of them into full-resolution logits exactly as
  `Sam.postprocess_masks` does (bit-identical; only over the rows/columns the crop keeps).
* `decoder="folded"` runs the mask decoder reorganised for its shape, 7 prompt tokens against 4096
  image tokens: in every cross-attention the projections of the image tokens are folded into the
  token side (q.(Wk x + b) = (Wk^T q).x + const, values projected after averaging), the first
  block's prompt-independent image-token work is computed once per image, and the upscaling runs as
  two GEMMs in a sub-pixel layout. The function is the same; float32 rounding differs (logits
  within ~1e-4), which bench/bench_priors.py shows does not change the kept masks or 8-bit maps.
  `decoder="module"` calls the model's own decoder (bit-identical to `SamPredictor`).

Only the modules' public attributes are used (`image_encoder`, `prompt_encoder`, `mask_decoder`,
`preprocess`, `image_format`), so `segment_anything` and `mobile_sam` models both work; decoders of
another design (HQ-SAM, EdgeSAM, ...) fall back to `"module"`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def resize_longest_side_shape(h: int, w: int, target: int) -> tuple[int, int]:
    """segment-anything's `ResizeLongestSide.get_preprocess_shape` (round half up)."""
    scale = target * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def _sam_device_dtype(sam) -> tuple[torch.device, torch.dtype]:
    p = next(sam.mask_decoder.parameters())
    return p.device, p.dtype


def _foldable(decoder) -> bool:
    """True when the decoder is segment-anything's two-way transformer decoder (the folded path's model)."""
    tr = getattr(decoder, "transformer", None)
    layers = getattr(tr, "layers", None)
    needed = ("iou_token", "mask_tokens", "output_upscaling", "output_hypernetworks_mlps",
              "iou_prediction_head", "num_mask_tokens")
    if tr is None or layers is None or not all(hasattr(decoder, n) for n in needed):
        return False
    if not hasattr(tr, "final_attn_token_to_image") or not hasattr(tr, "norm_final_attn"):
        return False
    block = ("self_attn", "norm1", "cross_attn_token_to_image", "norm2", "mlp", "norm3",
             "cross_attn_image_to_token", "norm4", "skip_first_layer_pe")
    return len(layers) > 0 and all(all(hasattr(l, n) for n in block) for l in layers)


def _scale(attn) -> float:
    return 1.0 / math.sqrt(attn.q_proj.out_features // attn.num_heads)


def _split_heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """`[..., N, H*dh]` -> `[..., H, N, dh]`."""
    return x.unflatten(-1, (h, -1)).transpose(-3, -2)


def _t2i_shared(attn, q_in: torch.Tensor, k_heads: torch.Tensor, v_heads: torch.Tensor) -> torch.Tensor:
    """Tokens attend to image tokens whose keys `[H,dh,N]` and values `[H,N,dh]` are the same
    for all prompts."""
    b, t, _ = q_in.shape
    h = attn.num_heads
    q = (attn.q_proj(q_in) * _scale(attn)).view(b * t, h, -1).transpose(0, 1)   # [H, B*T, dh]
    p = torch.softmax(q @ k_heads, dim=-1)                                   # [H, B*T, N]
    o = (p @ v_heads).transpose(0, 1).reshape(b, t, -1)                     # [B, T, H*dh]
    return attn.out_proj(o)


def _t2i_folded(attn, q_in: torch.Tensor, keys: torch.Tensor, k_in: torch.Tensor) -> torch.Tensor:
    """Tokens `q_in [B,T,C]` attend to image tokens (`keys` values, `k_in` = keys + pe, `[B,N,C]`).

    The key projection is applied to the T queries instead of the N keys (q.(Wk x + bk) =
    (Wk^T q).x + const, and a per-row constant does not change a softmax); the value projection is
    applied after averaging (rows of the attention sum to 1).
    """
    b, t, c = q_in.shape
    h = attn.num_heads
    q = (attn.q_proj(q_in) * _scale(attn)).view(b, t, h, -1)                 # [B,T,H,dh]
    wk = attn.k_proj.weight.view(h, -1, c)                                   # [H,dh,C]
    a = torch.einsum("bthd,hdc->bhtc", q, wk).reshape(b, h * t, c)
    p = torch.softmax(a @ k_in.transpose(1, 2), dim=-1)                      # [B,H*T,N]
    z = (p @ keys).view(b, h, t, c)                                          # [B,H,T,C]
    wv = attn.v_proj.weight.view(h, -1, c)
    o = torch.einsum("bhtc,hdc->bthd", z, wv) + attn.v_proj.bias.view(h, -1)
    return attn.out_proj(o.reshape(b, t, -1))


def _token_values_out(attn, v_in: torch.Tensor) -> torch.Tensor:
    """Values of the T tokens already through the output projection, per head: `[B, H*T, C]`.

    The output bias is spread over the heads (each head's attention row sums to 1)."""
    b, t, c = v_in.shape
    h = attn.num_heads
    v = attn.v_proj(v_in).view(b, t, h, -1)                                  # [B,T,H,dh]
    wo = attn.out_proj.weight.view(c, h, -1)                                 # [C,H,dh]
    u = torch.einsum("bthd,chd->bhtc", v, wo) + attn.out_proj.bias / h
    return u.reshape(b, h * t, c)


def _i2t_folded(attn, keys: torch.Tensor, k_in: torch.Tensor, q_tok: torch.Tensor, v_tok: torch.Tensor):
    """Image tokens attend to the T tokens; returns `keys + attention output` `[B,N,C]`.

    The query projection of the N image tokens is folded into the T token keys. Scores are laid
    out `[B,H,T,N]` so that the softmax over the T tokens runs along a long, contiguous axis."""
    b, t, c = q_tok.shape
    h = attn.num_heads
    kt = attn.k_proj(q_tok).view(b, t, h, -1) * _scale(attn)                 # [B,T,H,dh]
    wq = attn.q_proj.weight.view(h, -1, c)                                   # [H,dh,C]
    g = torch.einsum("hdc,bthd->bhtc", wq, kt).reshape(b, h * t, c)
    g0 = torch.einsum("hd,bthd->bht", attn.q_proj.bias.view(h, -1), kt).reshape(b, h * t, 1)
    s = torch.baddbmm(g0, g, k_in.transpose(1, 2))                           # [B,H*T,N]
    p = torch.softmax(s.view(b, h, t, -1), dim=2).view(b, h * t, -1)
    return torch.baddbmm(keys, p.transpose(1, 2), _token_values_out(attn, v_tok))


def _i2t_shared(attn, q_img: torch.Tensor, keys: torch.Tensor, q_tok: torch.Tensor, v_tok: torch.Tensor):
    """Like `_i2t_folded` for the first block, whose image-token queries `q_img [N,H*dh]` (scaled)
    and keys `[N,C]` are shared by all prompts: one GEMM against every prompt's token keys."""
    b, t, c = q_tok.shape
    h = attn.num_heads
    kt = attn.k_proj(q_tok).view(b, t, h, -1)                                # [B,T,H,dh]
    dh = kt.shape[-1]
    # block-diagonal token keys: row (b, h, t) holds head h's key in columns h*dh:(h+1)*dh
    kb = kt.new_zeros(b, h, t, h, dh)
    for j in range(h):
        kb[:, j, :, j, :] = kt[:, :, j, :]
    s = kb.view(b * h * t, h * dh) @ q_img.t()                               # [B*H*T, N]
    p = torch.softmax(s.view(b, h, t, -1), dim=2).view(b, h * t, -1)
    return torch.baddbmm(keys.expand(b, -1, -1), p.transpose(1, 2), _token_values_out(attn, v_tok))


def _upscaling_plan(seq):
    """Weights of segment-anything's output upscaling (ConvT 2x2/2, LayerNorm2d, act, ConvT 2x2/2,
    act) as GEMM matrices in a sub-pixel layout, or None for any other block."""
    mods = list(seq) if isinstance(seq, torch.nn.Sequential) else []
    if len(mods) != 5:
        return None
    ct1, ln, act1, ct2, act2 = mods
    ok = all(isinstance(m, torch.nn.ConvTranspose2d) and m.kernel_size == (2, 2) and m.stride == (2, 2)
             and m.padding == (0, 0) and m.output_padding == (0, 0) and m.groups == 1
             and m.dilation == (1, 1) and m.bias is not None for m in (ct1, ct2))
    ok = ok and type(ln).__name__ == "LayerNorm2d" and hasattr(ln, "eps")
    if not ok:
        return None

    def mat(ct):  # [Cin, Cout, 2, 2] -> [Cin, 2*2*Cout] (sub-pixel a, b, then channel)
        w = ct.weight
        return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1), ct.bias.repeat(4)

    w1, b1 = mat(ct1)
    w2, b2 = mat(ct2)
    return dict(w1=w1, b1=b1, w2=w2, b2=b2, ln=ln, act1=act1, act2=act2,
                c1=ct1.out_channels, c2=ct2.out_channels)


def _upscale_masks(plan, keys: torch.Tensor, hyper: torch.Tensor, hw) -> torch.Tensor:
    """keys `[B,N,C]` (N = h*w) and hypernetwork outputs `[B,K,C2]` -> mask logits `[B,K,4h,4w]`."""
    b, n, c = keys.shape
    h, w = hw
    k = hyper.shape[1]
    y = torch.addmm(plan["b1"], keys.reshape(b * n, c), plan["w1"]).view(b * n * 4, plan["c1"])
    ln = plan["ln"]
    y = plan["act1"](F.layer_norm(y, (plan["c1"],), ln.weight, ln.bias, ln.eps))
    y = plan["act2"](torch.addmm(plan["b2"], y, plan["w2"]))                   # [B*N*4, 4*C2]
    m = torch.bmm(y.view(b, n * 16, plan["c2"]), hyper.transpose(1, 2))        # [B, N*16, K]
    # (i, j, a, b, a2, b2) -> row 4i + 2a + a2, column 4j + 2b + b2
    m = m.view(b, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return m.reshape(b, k, 4 * h, 4 * w)


class SamPromptPredictor:
    """Single-point prompts on one image, for the automatic mask generator.

    `sam`: a segment-anything style `Sam` module. `decoder="folded"` runs the mask decoder
    reorganised for speed (`_decode_folded`: same function, float32 re-association only, logits
    within ~1e-5); `"module"` calls `sam.mask_decoder` exactly as segment-anything does
    (bit-identical to `SamPredictor`). Decoders of another design always use `"module"`.
    `chunk`: prompts per decoder call.
    """

    def __init__(self, sam, *, decoder: str = "folded", chunk: int = 16):
        if decoder not in ("folded", "module"):
            raise ValueError(f"decoder must be 'folded' or 'module', got {decoder!r}")
        self.sam = sam
        self.device, self.dtype = _sam_device_dtype(sam)
        self.img_size = int(sam.image_encoder.img_size)
        self.decoder = "folded" if decoder == "folded" and _foldable(sam.mask_decoder) else "module"
        self.chunk = max(1, int(chunk))
        self.features = None
        self._cache = None

    # -- image ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def set_image(self, image_u8: np.ndarray) -> None:
        """`image_u8` uint8 `[H,W,3]` RGB -> image embedding (as `SamPredictor.set_image`)."""
        from PIL import Image

        if getattr(self.sam, "image_format", "RGB") == "BGR":
            image_u8 = image_u8[..., ::-1]
        h, w = image_u8.shape[:2]
        nh, nw = resize_longest_side_shape(h, w, self.img_size)
        # ResizeLongestSide.apply_image = torchvision resize of a PIL image = PIL bilinear resize
        resized = np.array(Image.fromarray(np.ascontiguousarray(image_u8)).resize((nw, nh), Image.BILINEAR))
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        x = self.sam.preprocess(x.to(self.dtype) if self.dtype != torch.float32 else x)
        self.features = self.sam.image_encoder(x)
        self.original_size = (h, w)
        self.input_size = (nh, nw)
        self.image_pe = self.sam.prompt_encoder.get_dense_pe()
        self._cache = None

    def reset_image(self) -> None:
        self.features = None
        self._cache = None

    # -- prompts -------------------------------------------------------------------------------
    def _transform_points(self, points_xy: np.ndarray) -> torch.Tensor:
        h, w = self.original_size
        nh, nw = self.input_size
        pts = np.array(points_xy, dtype=np.float64, copy=True)
        pts[:, 0] = pts[:, 0] * (nw / w)
        pts[:, 1] = pts[:, 1] * (nh / h)
        return torch.as_tensor(pts, device=self.device)  # float64, as segment-anything feeds them

    @torch.inference_mode()
    def predict(self, points_xy: np.ndarray, multimask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Point prompts in original-image pixels `[B,2]` (x, y) -> (low-res logits `[B,K,r,c]`,
        predicted IoU `[B,K]`), K = 3 (multimask) or 1. The logits are the decoder's 256x256
        output cut to the `r x c` part that covers the image (the rest is padding)."""
        if self.features is None:
            raise RuntimeError("call set_image() first")
        coords = self._transform_points(points_xy)
        masks, ious = [], []
        for i in range(0, coords.shape[0], self.chunk):
            c = coords[i:i + self.chunk, None, :]
            labels = torch.ones(c.shape[0], 1, dtype=torch.int, device=self.device)
            sparse, dense = self.sam.prompt_encoder(points=(c, labels), boxes=None, masks=None)
            if self.decoder == "folded":
                m, q = self._decode_folded(sparse, multimask)
            else:
                m, q = self.sam.mask_decoder(image_embeddings=self.features, image_pe=self.image_pe,
                                             sparse_prompt_embeddings=sparse,
                                             dense_prompt_embeddings=dense, multimask_output=multimask)
            masks.append(self._crop_low_res(m.float()))
            ious.append(q.float())
        return torch.cat(masks), torch.cat(ious)

    # -- folded decoder ------------------------------------------------------------------------
    def _shared(self):
        """Per-image tensors of the folded decoder (every prompt sees the same first-block keys)."""
        if self._cache is None:
            md = self.sam.mask_decoder
            layer = md.transformer.layers[0]
            t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            src = self.features + self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            keys = src.flatten(2).transpose(1, 2).contiguous()[0]          # [N,C]
            key_pe = self.image_pe.flatten(2).transpose(1, 2).contiguous()[0]
            k_in = keys + key_pe
            h = t2i.num_heads
            self._cache = dict(
                keys=keys, key_pe=key_pe, hw=tuple(src.shape[-2:]),
                # first block, tokens -> image: keys/values of the image tokens, per head [H,N,dh]
                t2i_k=_split_heads(t2i.k_proj(k_in), h).transpose(1, 2).contiguous(),   # [H,dh,N]
                t2i_v=_split_heads(t2i.v_proj(keys), h).contiguous(),                   # [H,N,dh]
                # first block, image -> tokens: scaled queries of the image tokens [N,ci]
                i2t_q=i2t.q_proj(k_in) * _scale(i2t),
                up=_upscaling_plan(md.output_upscaling),
            )
        return self._cache

    def _decode_folded(self, sparse: torch.Tensor, multimask: bool):
        """The mask decoder, reorganised for few tokens attending to many image tokens.

        Same function as `MaskDecoder.forward` (float32 re-association only): attention between the
        7 prompt tokens and the 4096 image tokens is computed without projecting the image tokens
        (the projections are folded into the token side), the first block's image-token work is
        shared by all prompts, and the upscaling runs as two GEMMs in a sub-pixel layout.
        """
        md = self.sam.mask_decoder
        tr = md.transformer
        s = self._shared()
        b = sparse.shape[0]
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat((out_tokens.unsqueeze(0).expand(b, -1, -1), sparse), dim=1)  # [B,T,C]
        query_pe, key_pe = tokens, s["key_pe"]
        queries, keys = tokens, None
        for i, layer in enumerate(tr.layers):
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + query_pe
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            if i == 0:
                attn_out = _t2i_shared(t2i, queries + query_pe, s["t2i_k"], s["t2i_v"])
            else:
                k_in = keys + key_pe
                attn_out = _t2i_folded(t2i, queries + query_pe, keys, k_in)
            queries = layer.norm2(queries + attn_out)
            queries = layer.norm3(queries + layer.mlp(queries))
            if i == 0:
                keys = _i2t_shared(i2t, s["i2t_q"], s["keys"], queries + query_pe, queries)
            else:
                keys = _i2t_folded(i2t, keys, k_in, queries + query_pe, queries)
            keys = layer.norm4(keys)
        fa = tr.final_attn_token_to_image
        queries = tr.norm_final_attn(queries + _t2i_folded(fa, queries + query_pe, keys, keys + key_pe))

        sel = range(1, md.num_mask_tokens) if multimask else range(0, 1)
        hyper = torch.stack([md.output_hypernetworks_mlps[j](queries[:, 1 + j, :]) for j in sel], dim=1)
        iou = md.iou_prediction_head(queries[:, 0, :])
        iou = iou[:, 1:] if multimask else iou[:, :1]
        plan = s["up"]
        if plan is None:  # unknown upscaling block: run it as the model does
            h, w = s["hw"]
            up = md.output_upscaling(keys.transpose(1, 2).reshape(b, -1, h, w))
            bu, cu, hu, wu = up.shape
            return (hyper @ up.view(bu, cu, hu * wu)).view(bu, -1, hu, wu), iou
        return _upscale_masks(plan, keys, hyper, s["hw"]), iou

    # -- full resolution -----------------------------------------------------------------------
    @torch.inference_mode()
    def upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        """Low-res logits `[n,r,c]` from `predict` -> full-resolution logits `[n,H,W]`
        (`Sam.postprocess_masks`: 4x to the 1024 frame, crop to the resized image, resize).

        `predict` keeps only the low-res rows/columns that survive the crop; upsampling them by
        exactly 4 (scale 1/4, as for the full frame) gives every kept value the full frame gives.
        """
        nh, nw = self.input_size
        r, c = low_res.shape[-2:]
        x = F.interpolate(low_res[:, None].float(), (r * self._up, c * self._up), mode="bilinear",
                          align_corners=False)
        x = x[..., :nh, :nw]
        x = F.interpolate(x, self.original_size, mode="bilinear", align_corners=False)
        return x[:, 0]

    def _crop_low_res(self, masks: torch.Tensor) -> torch.Tensor:
        """Keep the low-res rows/columns that `upscale` reads (saves memory for all candidates)."""
        lh, lw = masks.shape[-2:]
        self._up = up = self.img_size // lh
        if up * lh != self.img_size or up * lw != self.img_size or lh != lw:
            raise ValueError(f"unexpected decoder output size {lh}x{lw} for a {self.img_size} frame")
        nh, nw = self.input_size
        rows, cols = min(lh, -(-nh // up) + 1), min(lw, -(-nw // up) + 1)
        return masks[..., :rows, :cols].contiguous()
