"""The mask decoder's fast path (``core.fastpath`` patches it in): same results, less work.

- Attention runs through ``F.scaled_dot_product_attention`` (no score matrix)
  in float32 and on a GPU. When training in bfloat16 on a CPU it runs as SAM's
  own three steps instead: with a decoder's short token axis, PyTorch's CPU flash
  kernel takes 4 to 6 times longer for forward and backward (measured at
  25 objects x 8 heads x 256 image tokens x 7 to 21 prompt tokens:
  37.6 against 9.7 ms).
- The image embedding and its positional encoding broadcast over the objects
  instead of being copied once per object (25 x 256 x 64 x 64 floats, 105 MB,
  at 1024 px).
- The upscaling to masks runs as ``core.decoding.upscale_masks`` (matrix
  products and ``F.layer_norm`` on channels-last pixels): no layout copies
  of the (objects, channels, 64 x 64) maps, and a backward through matrix
  products instead of oneDNN's slower transposed-convolution backward.
- Without mask prompts every object sees the same image tokens in the first
  two-way block until the image attends to its tokens: their projections
  (3 of the 10 image-sized projections of a pass) are computed once, not once
  per object, and the tokens of all objects attend to them as one batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import decoding


def attention(q, k, v):
    """softmax(q k^T / sqrt(d)) v, by the kernel that is faster for q's dtype and device.

    SAM's three steps only where a backward follows: without one, both kernels
    take about as long, and the flash kernel's float32 accumulation keeps
    bfloat16 inference closer to float32 (ib moved by 0.027 with three steps).
    """
    if q.dtype == torch.bfloat16 and q.device.type == "cpu" and torch.is_grad_enabled():
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        return torch.softmax(scores, dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(d), as SAM


def fast_attention(self, q, k, v):
    """segment_anything's decoder ``Attention.forward``, heads kept together."""
    q = self._separate_heads(self.q_proj(q), self.num_heads)
    k = self._separate_heads(self.k_proj(k), self.num_heads)
    v = self._separate_heads(self.v_proj(v), self.num_heads)
    return self.out_proj(self._recombine_heads(attention(q, k, v)))


def predict_masks(
    self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
):
    """``MaskDecoder.predict_masks`` for one image, without per-object copies."""
    from segment_anything.modeling.mask_decoder import MaskDecoder

    sparse, dense = sparse_prompt_embeddings, dense_prompt_embeddings
    if image_embeddings.shape[0] != 1 or image_pe.shape[0] != 1:
        return MaskDecoder.predict_masks(
            self, image_embeddings, image_pe, sparse, dense
        )
    n = sparse.shape[0]
    tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
    tokens = torch.cat((tokens.expand(n, -1, -1), sparse), dim=1)
    if dense.shape[0] == 1 or dense.stride(0) == 0:  # no mask prompt: one dense
        hs, src = shared_image_transformer(
            self.transformer, image_embeddings + dense[:1], image_pe, tokens
        )
    else:
        hs, src = self.transformer(image_embeddings + dense, image_pe, tokens)
    mask_tokens = hs[:, 1 : (1 + self.num_mask_tokens), :]
    hyper_in = torch.stack(
        [
            mlp(mask_tokens[:, i, :])
            for i, mlp in enumerate(self.output_hypernetworks_mlps)
        ],
        dim=1,
    )
    _, c, h, w = image_embeddings.shape
    if decoding.upscaling_supported(self.output_upscaling):
        masks = decoding.upscale_masks(self, src, hyper_in, (h, w))
    else:
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(n, c, h, w))
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    return masks, self.iou_prediction_head(hs[:, 0, :])


def shared_image_transformer(self, image_embedding, image_pe, point_embedding):
    """``TwoWayTransformer.forward`` for (1, C, h, w) image tokens shared by all objects."""
    keys = image_embedding.flatten(2).permute(0, 2, 1)
    key_pe = image_pe.flatten(2).permute(0, 2, 1)
    first, *rest = self.layers
    queries, keys = _shared_first_block(first, point_embedding, keys, key_pe)
    for layer in rest:
        queries, keys = layer(
            queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe
        )
    q = queries + point_embedding
    attn_out = self.final_attn_token_to_image(q=q, k=keys + key_pe, v=keys)
    return self.norm_final_attn(queries + attn_out), keys


def _shared_first_block(block, queries, keys, key_pe):
    """``TwoWayAttentionBlock.forward`` while the image tokens are the same for all.

    In the first block the queries are the prompt tokens themselves, which are
    also their positional encoding (as in ``TwoWayTransformer.forward``).
    """
    query_pe = queries
    if block.skip_first_layer_pe:
        queries = block.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + block.self_attn(q=q, k=q, v=queries)
    queries = block.norm1(queries)
    k = keys + key_pe
    attn_out = _tokens_to_shared_image(
        block.cross_attn_token_to_image, queries + query_pe, k, keys
    )
    queries = block.norm2(queries + attn_out)
    queries = block.norm3(queries + block.mlp(queries))
    q = queries + query_pe
    attn_out = _shared_image_to_tokens(block.cross_attn_image_to_token, k, q, queries)
    return queries, block.norm4(keys + attn_out)


def _tokens_to_shared_image(attn, q, k, v):
    """Every object's tokens attend to one image: one batch of n x T queries."""
    n, t, _ = q.shape
    q = attn._separate_heads(attn.q_proj(q).reshape(1, n * t, -1), attn.num_heads)
    k = attn._separate_heads(attn.k_proj(k), attn.num_heads)
    v = attn._separate_heads(attn.v_proj(v), attn.num_heads)
    out = attn._recombine_heads(attention(q, k, v))
    return attn.out_proj(out.reshape(n, t, -1))


def _shared_image_to_tokens(attn, q, k, v):
    """The one image's tokens attend to each object's tokens (projected once)."""
    n = k.shape[0]
    q = attn._separate_heads(attn.q_proj(q), attn.num_heads).expand(n, -1, -1, -1)
    k = attn._separate_heads(attn.k_proj(k), attn.num_heads)
    v = attn._separate_heads(attn.v_proj(v), attn.num_heads)
    out = attention(q, k, v)
    return attn.out_proj(attn._recombine_heads(out))
