"""A faster, leaner SAM for training and inference, numerically equal to segment_anything's.

- Image-encoder attention runs through ``F.scaled_dot_product_attention`` with
  SAM's decomposed relative-position term passed as an additive mask (it
  depends on q, so gradients flow through it), instead of explicit matmuls, a
  separate einsum pass and a softmax over a materialised score matrix.
- Lean attention (``lean=True``): that mask is a materialised (B, heads, N, N)
  map, 805 MB per global block of vit_b at 1024 px in float32, and the
  softmax saved for backward is as large again. The rel-pos term of a query
  depends only on its own row, so queries are processed a few grid rows at a
  time, each chunk recomputed in backward (``torch.utils.checkpoint``):
  memory O(chunk x N) instead of O(N x N), for one more attention forward.
  On a CPU the rows go in chunks also otherwise, chunks whose mask fits the
  last-level cache (``footprint.CACHE_ELEMENTS``), without recomputation.
- Windowed blocks compute qkv and the output projection on the image's own
  tokens only, not on the zero padding up to a multiple of the window (a
  16 x 16 grid is padded to 28 x 28 for 14 x 14 windows: 3x the tokens); the
  padding's qkv is that of one zero token, so the result is unchanged.
- The mask decoder: see ``core.fastdecoder`` (SDPA, no per-object copies,
  the first block's image projections shared by all objects).
- The prompt encoder embeds points with ``torch.where`` instead of boolean
  indexing, which forces a host synchronisation every call (sweep_perf.md
  pitfall 11) and breaks CUDA graphs and ``torch.compile``.

All are patched per module instance (``types.MethodType``), so parameter
names, state dicts and every PEFT wrapper (which replace ``attn.qkv``,
``attn.proj`` or the MLP) stay as they are.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import fastdecoder
from .footprint import attention_rows


def _rel_pos_attention(q, k, v, rel_h, rel_w, scale: float, width: int):
    """SDPA of (B, heads, rows*width, d) queries with SAM's decomposed rel-pos mask.

    ``rel_h`` holds the rows' (rows, H, d) relative embeddings, ``rel_w`` the
    (width, W, d) ones; the mask of query (r, c) and key (i, j) is
    q . rel_h[r, i] + q . rel_w[c, j], as ``add_decomposed_rel_pos``.
    """
    b, heads, n, d = q.shape
    r_q = q.reshape(b * heads, n // width, width, d)
    bias_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_h)
    bias_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_w)
    bias = (bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]).reshape(
        b, heads, n, k.shape[2]
    )
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


def _attend(self, qkv: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h, w, 3C) qkv -> (B, h, w, C) attention output, before the projection."""
    from segment_anything.modeling.image_encoder import get_rel_pos

    b, heads = qkv.shape[0], self.num_heads
    q, k, v = qkv.reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    if not self.use_rel_pos:
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return out.transpose(1, 2).reshape(b, h, w, -1)
    rel_h = get_rel_pos(h, h, self.rel_pos_h)
    rel_w = get_rel_pos(w, w, self.rel_pos_w)
    lean = getattr(self, "lean", False)
    rows = attention_rows(b, heads, h, w, lean, q.device.type == "cpu")
    recompute = lean and torch.is_grad_enabled()
    parts = []
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        args = (q[:, :, r0 * w : r1 * w], k, v, rel_h[r0:r1], rel_w, self.scale, w)
        if recompute:
            parts.append(
                checkpoint(
                    _rel_pos_attention,
                    *args,
                    use_reentrant=False,
                    preserve_rng_state=False,  # the attention draws no random numbers
                )
            )
        else:
            parts.append(_rel_pos_attention(*args))
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out.transpose(1, 2).reshape(b, h, w, -1)


def _fast_attention(self, x: torch.Tensor) -> torch.Tensor:
    _, h, w, _ = x.shape
    return self.proj(_attend(self, self.qkv(x), h, w))


def _fast_block(self, x: torch.Tensor) -> torch.Tensor:
    from segment_anything.modeling.image_encoder import (
        Block,
        window_partition,
        window_unpartition,
    )

    size = self.window_size
    if not size or (self.training and self.attn_dropout):
        # a dropout's random draws depend on the tokens it sees: keep the padding
        return Block.forward(self, x)
    shortcut = x
    x = self.norm1(x)
    b, h, w, c = x.shape
    qkv = self.attn.qkv(x)
    pad_h, pad_w = -h % size, -w % size
    if pad_h or pad_w:
        fill = self.attn.qkv(x.new_zeros(1, 1, 1, c))  # what padded tokens get
        qkv = torch.cat([qkv, fill.expand(b, h, pad_w, -1)], dim=2)
        qkv = torch.cat([qkv, fill.expand(b, pad_h, w + pad_w, -1)], dim=1)
    windows, padded = window_partition(qkv, size)
    out = _attend(self.attn, windows, size, size)
    out = window_unpartition(out, size, padded, (h, w))
    x = shortcut + self.attn.proj(out)
    return x + self.mlp(self.norm2(x))


def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool):
    points = points + 0.5  # shift to the pixel centre, as segment_anything does
    if pad:
        padding_point = torch.zeros((points.shape[0], 1, 2), device=points.device)
        padding_label = -torch.ones((labels.shape[0], 1), device=labels.device)
        points = torch.cat([points, padding_point], dim=1)
        labels = torch.cat([labels, padding_label], dim=1)
    embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
    labels = labels[..., None]
    embedding = torch.where(labels == -1, self.not_a_point_embed.weight, embedding)
    embedding = embedding + (labels == 0) * self.point_embeddings[0].weight
    return embedding + (labels == 1) * self.point_embeddings[1].weight


def patch_attention(attention: nn.Module, lean: bool = False) -> nn.Module:
    """Route one image-encoder ``Attention`` through SDPA (idempotent)."""
    attention.forward = types.MethodType(_fast_attention, attention)
    attention.lean = lean
    return attention


def set_lean(sam: nn.Module, lean: bool) -> None:
    """Turn lean (query-chunked, recomputed) encoder attention on or off."""
    for module in sam.image_encoder.modules():
        if hasattr(module, "lean"):
            module.lean = lean


def enable_fast_path(sam: nn.Module, lean: bool = False) -> nn.Module:
    """Patch ``sam`` in place (idempotent); returns it.

    Call it after the PEFT method is applied (it reads whether the attention
    holds a dropout). ``lean`` bounds the attention's memory (see above).
    """
    from segment_anything.modeling.image_encoder import Attention, Block
    from segment_anything.modeling.transformer import Attention as DecoderAttention

    for module in sam.image_encoder.modules():
        if isinstance(module, Attention):
            patch_attention(module, lean)
        elif isinstance(module, Block):
            module.attn_dropout = any(
                isinstance(m, nn.Dropout) and m.p > 0 for m in module.attn.modules()
            )
            module.forward = types.MethodType(_fast_block, module)
    for module in sam.mask_decoder.modules():
        if isinstance(module, DecoderAttention):
            module.forward = types.MethodType(fastdecoder.fast_attention, module)
    decoder = sam.mask_decoder
    decoder.predict_masks = types.MethodType(fastdecoder.predict_masks, decoder)
    sam.prompt_encoder._embed_points = types.MethodType(
        _embed_points, sam.prompt_encoder
    )
    sam.fast_path = True
    return sam
