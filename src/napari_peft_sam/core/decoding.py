"""SAM's mask decoder for many objects of one image, sharing the image's work.

segment_anything's ``MaskDecoder`` copies the image embedding once per prompt
(``repeat_interleave``) and runs every image-token operation once per object.
Without mask inputs the decoder's image tokens are the same for every object
until the first image-to-token attention, so here, for inference:

- the image side of the first two-way block (key and value projections of the
  token-to-image attention, query projection of the image-to-token attention)
  runs once per image and is cached with the embedding; all objects' tokens
  attend to it in one call;
- the later projections of the (now per-object) image tokens are fused into
  one matrix multiply per block, the positional encoding's share folded into a
  bias computed once per image;
- tokens attend to the image through ``F.scaled_dot_product_attention``; the
  image attends to each object's handful of tokens through two wide matrix
  products, the heads as a block-diagonal matrix (SDPA spends its time on
  per-row overhead there), with the output projection folded into the values;
- the output upscaling (two stride-2 transposed convolutions, which touch no
  neighbours) runs as matrix multiplies on channels-last tokens, and only the
  mask tokens the caller keeps (one, or three with multimask output) reach the
  hypernetwork product;
- objects go through in chunks, so intermediate buffers stay small.

The result equals segment_anything's up to float rounding (tests compare).
Anything but a plain segment_anything decoder is refused (``supported``) and
left to the reference path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def supported(decoder: nn.Module) -> bool:
    """Whether ``decoder`` is the plain segment_anything decoder this module rewrites."""
    from segment_anything.modeling.mask_decoder import MaskDecoder
    from segment_anything.modeling.transformer import TwoWayTransformer

    if type(decoder) is not MaskDecoder:
        return False
    transformer = decoder.transformer
    return (
        type(transformer) is TwoWayTransformer
        and len(transformer.layers) >= 1
        and transformer.layers[0].skip_first_layer_pe
        and upscaling_supported(decoder.output_upscaling)
        and all(
            type(a.q_proj) is type(a.k_proj) is type(a.v_proj) is nn.Linear
            for a in _attentions(transformer)
        )
    )


def upscaling_supported(upscaling: nn.Module) -> bool:
    """Whether ``upscaling`` is SAM's, which :func:`upscale_masks` rewrites: 2x2
    stride-2 transposed conv, LayerNorm2d, GELU, the same conv again, GELU."""
    from segment_anything.modeling.common import LayerNorm2d

    up = list(upscaling) if isinstance(upscaling, nn.Sequential) else []
    kinds = [nn.ConvTranspose2d, LayerNorm2d, nn.GELU, nn.ConvTranspose2d, nn.GELU]
    return (
        len(up) == len(kinds)
        and all(type(m) is k for m, k in zip(up, kinds, strict=True))
        and all(
            m.kernel_size == (2, 2) == m.stride
            and m.padding == (0, 0) == m.output_padding
            and m.dilation == (1, 1)
            and m.groups == 1
            and m.bias is not None
            for m in up[::3]
        )
    )


def _attentions(transformer):
    for layer in transformer.layers:
        yield layer.cross_attn_token_to_image
        yield layer.cross_attn_image_to_token
    yield transformer.final_attn_token_to_image


@dataclass
class SharedImage:
    """Per-image tensors of the decoder, the same for every object."""

    keys: torch.Tensor  # (1, N, C) image tokens
    first_k: torch.Tensor  # (1, N, d') token-to-image keys of block 1
    first_v: torch.Tensor  # (1, N, d') its values
    first_q: torch.Tensor  # (1, N, d') image-to-token queries of block 1
    fused: list[tuple[torch.Tensor, torch.Tensor]]  # later blocks: (3d', C), (N, 3d')
    final: tuple[torch.Tensor, torch.Tensor]  # final attention: (2d', C), (N, 2d')


def _stack(attn_k, attn_q_or_none, attn_v, pe):
    """Weights and folded bias of projections of (keys + pe) and of keys."""
    weights = [attn_k.weight]
    pe_parts = [F.linear(pe, attn_k.weight, attn_k.bias)]
    if attn_q_or_none is not None:
        weights.append(attn_q_or_none.weight)
        pe_parts.append(F.linear(pe, attn_q_or_none.weight, attn_q_or_none.bias))
    weights.append(attn_v.weight)
    pe_parts.append(attn_v.bias.expand(pe.shape[0], -1))
    return torch.cat(weights), torch.cat(pe_parts, dim=1)


@torch.no_grad()
def prepare(sam, features: torch.Tensor, decoder=None) -> SharedImage:
    """The per-image part of the decoder for an image embedding ``(1, C, h, w)``.

    ``decoder`` is ``sam.mask_decoder`` or a copy in a lower precision; the
    computation runs in its dtype.
    """
    decoder = decoder or sam.mask_decoder
    dtype = decoder.iou_token.weight.dtype
    prompt_encoder, transformer = sam.prompt_encoder, decoder.transformer
    dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
    keys = (features + dense).flatten(2).transpose(1, 2).to(dtype)
    pe = prompt_encoder.get_dense_pe().flatten(2).transpose(1, 2)[0].to(dtype)
    first = transformer.layers[0]
    t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
    fused = [
        _stack(
            layer.cross_attn_token_to_image.k_proj,
            layer.cross_attn_image_to_token.q_proj,
            layer.cross_attn_token_to_image.v_proj,
            pe,
        )
        for layer in transformer.layers[1:]
    ]
    final = transformer.final_attn_token_to_image
    return SharedImage(
        keys=keys,
        first_k=t2i.k_proj(keys + pe),
        first_v=t2i.v_proj(keys),
        first_q=i2t.q_proj(keys + pe),
        fused=fused,
        final=_stack(final.k_proj, None, final.v_proj, pe),
    )


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, d) -> (B, heads, L, d / heads)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, dh) -> (B, L, heads * dh)."""
    return x.transpose(1, 2).flatten(2)


def _tokens_to_image(attn, queries, k, v):
    """Tokens (n, T, C) attend to projected image keys/values (1 or n, N, d')."""
    n, t, _ = queries.shape
    q = attn.q_proj(queries)
    if k.shape[0] == 1 and n > 1:  # shared image: every object's tokens in one call
        q = q.reshape(1, n * t, -1)
    out = F.scaled_dot_product_attention(
        _heads(q, attn.num_heads), _heads(k, attn.num_heads), _heads(v, attn.num_heads)
    )
    return attn.out_proj(_merge(out).reshape(n, t, -1))


def _image_to_tokens(attn, q, token_k, token_v):
    """Projected image queries (1 or n, N, d') attend to each object's tokens.

    Returns the attention's output projection, (n, N, C). With a handful of
    tokens per object, SDPA spends its time on per-row overhead; here the
    heads form a block-diagonal key matrix, so scores and output are two wide
    matrix products, with ``out_proj`` folded into the values.
    """
    n, t, _ = token_k.shape
    heads, out_proj = attn.num_heads, attn.out_proj
    k = attn.k_proj(token_k).unflatten(-1, (heads, -1))  # (n, t, heads, dh)
    v = attn.v_proj(token_v).unflatten(-1, (heads, -1))
    eye = torch.eye(heads, dtype=k.dtype, device=k.device) * k.shape[-1] ** -0.5
    blocks = torch.einsum("othd,hg->ohdgt", k, eye).reshape(n, -1, heads * t)
    scores = (q @ blocks).unflatten(-1, (heads, t))  # (n, N, heads, t)
    scores = scores.sub_(scores.amax(-1, keepdim=True)).exp_()
    weights = scores.div_(scores.sum(-1, keepdim=True)).flatten(2)
    w_out = out_proj.weight.unflatten(1, (heads, -1))  # (C, heads, dh)
    values = torch.einsum("othd,chd->ohtc", v, w_out).reshape(n, heads * t, -1)
    return torch.baddbmm(out_proj.bias.expand(n, 1, -1), weights, values)


def _self_block(layer, queries, query_pe):
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + layer.self_attn(q=q, k=q, v=queries)
    return layer.norm1(queries)


def _token_mlp(layer, queries):
    queries = layer.norm3(queries + layer.mlp(queries))
    return queries


def _first_block(layer, shared: SharedImage, tokens):
    queries = _self_block(layer, tokens, tokens)
    attn = _tokens_to_image(
        layer.cross_attn_token_to_image,
        queries + tokens,
        shared.first_k,
        shared.first_v,
    )
    queries = _token_mlp(layer, layer.norm2(queries + attn))
    out = _image_to_tokens(
        layer.cross_attn_image_to_token, shared.first_q, queries + tokens, queries
    )
    return queries, layer.norm4(out.add_(shared.keys))


def _later_block(layer, keys, fused, tokens, queries):
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    weight, bias = fused
    k, q, v = F.linear(keys, weight).add_(bias).split(t2i.k_proj.out_features, -1)
    queries = _self_block(layer, queries, tokens)
    attn = _tokens_to_image(t2i, queries + tokens, k, v)
    queries = _token_mlp(layer, layer.norm2(queries + attn))
    out = _image_to_tokens(i2t, q, queries + tokens, queries)
    return queries, layer.norm4(out.add_(keys))


def _transformer(transformer, shared: SharedImage, tokens):
    queries, keys = _first_block(transformer.layers[0], shared, tokens)
    for layer, fused in zip(transformer.layers[1:], shared.fused, strict=True):
        queries, keys = _later_block(layer, keys, fused, tokens, queries)
    weight, bias = shared.final
    k, v = F.linear(keys, weight).add_(bias).chunk(2, dim=-1)
    final = transformer.final_attn_token_to_image
    attn = _tokens_to_image(final, queries + tokens, k, v)
    return transformer.norm_final_attn(queries + attn), keys


def _transposed_conv(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A 2x2 stride-2 transposed convolution on channels-last pixels: (..., C) -> (..., 4, C')."""
    weight = conv.weight.permute(0, 2, 3, 1).flatten(1)  # (C, 2 * 2 * C')
    out = x @ weight
    return out.unflatten(-1, (4, -1)).add_(conv.bias)


def upscale_masks(decoder, keys, hyper, side: tuple[int, int]):
    """Mask logits (n, m, 4h, 4w) from image tokens (n, N, C) and hyper (n, m, C/8)."""
    ct1, norm, act1, ct2, act2 = decoder.output_upscaling
    x = _transposed_conv(keys, ct1)  # (n, N, 4, C/4)
    x = act1(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
    x = act2(_transposed_conv(x, ct2))  # (n, N, 4, 4, C/8)
    n, m, h, w = len(keys), hyper.shape[1], *side
    masks = x.reshape(n, -1, x.shape[-1]) @ hyper.transpose(1, 2)  # (n, 16 N, m)
    # token (y, x), first sub-pixel (a, b), second (c, d) -> pixel (4y+2a+c, 4x+2b+d)
    masks = masks.reshape(n, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return masks.reshape(n, m, 4 * h, 4 * w)


@torch.no_grad()
def decode_shared(
    sam,
    shared: SharedImage,
    side: tuple[int, int],
    sparse: torch.Tensor,
    multimask: bool,
    chunk: int = 16,
    decoder=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-res logits (n, m, 4h, 4w) and IoU predictions (n, m), as ``MaskDecoder``.

    ``sparse`` are the prompt encoder's sparse embeddings (n, k, C); ``side``
    is the embedding's (h, w); ``m`` is 3 with ``multimask``, else 1.
    ``decoder`` as in :func:`prepare`; the outputs are float32.
    """
    decoder = decoder or sam.mask_decoder
    sparse = sparse.to(decoder.iou_token.weight.dtype)
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight])
    chosen = slice(1, None) if multimask else slice(0, 1)
    masks, ious = [], []
    for start in range(0, len(sparse), chunk):
        part = sparse[start : start + chunk]
        tokens = torch.cat([output_tokens.expand(len(part), -1, -1), part], dim=1)
        hs, keys = _transformer(decoder.transformer, shared, tokens)
        mask_tokens = hs[:, 1 : 1 + decoder.num_mask_tokens][:, chosen]
        mlps = list(decoder.output_hypernetworks_mlps)[chosen]
        hyper = torch.stack(
            [mlp(mask_tokens[:, i]) for i, mlp in enumerate(mlps)], dim=1
        )
        masks.append(upscale_masks(decoder, keys, hyper, side))
        ious.append(decoder.iou_prediction_head(hs[:, 0])[:, chosen])
    return torch.cat(masks).float(), torch.cat(ious).float()
