"""A faster SAM for training and inference, numerically equal to segment_anything's.

- Image-encoder attention runs through ``F.scaled_dot_product_attention`` with
  SAM's decomposed relative-position term passed as an additive mask (it
  depends on q, so gradients flow through it), instead of explicit matmuls, a
  separate einsum pass and a softmax over a materialised score matrix.
- The prompt encoder embeds points with ``torch.where`` instead of boolean
  indexing, which forces a host synchronisation every call (sweep_perf.md
  pitfall 11) and breaks CUDA graphs and ``torch.compile``.

Both are patched per module instance (``types.MethodType``), so parameter
names, state dicts and every PEFT wrapper (which replace ``attn.qkv`` or the
MLP) stay as they are.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn


def _fast_attention(self, x: torch.Tensor) -> torch.Tensor:
    from segment_anything.modeling.image_encoder import get_rel_pos

    b, h, w, _ = x.shape
    heads = self.num_heads
    qkv = self.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, N, d)
    bias = None
    if self.use_rel_pos:
        d = q.shape[-1]
        rel_h = get_rel_pos(h, h, self.rel_pos_h)
        rel_w = get_rel_pos(w, w, self.rel_pos_w)
        r_q = q.reshape(b * heads, h, w, d)
        bias_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_h)
        bias_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_w)
        bias = (bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]).reshape(
            b, heads, h * w, h * w
        )
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
    return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


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


def patch_attention(attention: nn.Module) -> nn.Module:
    """Route one image-encoder ``Attention`` through SDPA (idempotent)."""
    attention.forward = types.MethodType(_fast_attention, attention)
    return attention


def enable_fast_path(sam: nn.Module) -> nn.Module:
    """Patch ``sam`` in place (idempotent); returns it."""
    from segment_anything.modeling.image_encoder import Attention

    for module in sam.image_encoder.modules():
        if isinstance(module, Attention):
            patch_attention(module)
    sam.prompt_encoder._embed_points = types.MethodType(
        _embed_points, sam.prompt_encoder
    )
    sam.fast_path = True
    return sam
