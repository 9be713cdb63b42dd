"""The memory a training step holds at its peak, from shapes alone.

``estimate_peak_mb`` adds up what a training step of ``core.training`` holds:
the process itself (on the CPU), the weights, gradients and AdamW state, the
activations the image encoder saves for backward, and one decoder pass (the
passes are back-propagated one at a time). ``core.budget`` compares it with
the memory free. Calibrated on peak RSS of 2-step runs on a 2-core EPYC
(``benchmarks/bench_train.py --memory``): vit_b at 1024 px in bfloat16 held
15.3 GB with 25 objects and no memory saving, 13.0 GB with one object.

The attention's query rows go in chunks (``attention_rows``, also used by
``core.fastpath``). Without lean attention every chunk's SDPA saves its
softmax and its own copies of the keys for backward (one in float32, two in
bfloat16): 64 chunks of a global block of vit_b at 1024 px, 0.8 GB each.
"""

from __future__ import annotations

import functools
import json
import math

OBJECT_CHUNK = 8  # objects decoded at once when memory saving is on
LEVELS = ("off", "chunks", "checkpoint")
# scores per chunk of query rows in lean attention (64 MB in float32); a
# chunk's backward holds about five arrays of this size
LEAN_ELEMENTS = 2**24
# scores per chunk otherwise (16 MB in float32): a chunk's rel-pos mask is
# written and read again while it is still in a CPU's last-level cache.
# Measured on a 2-core EPYC (32 MB L3), one global block at 64 x 64 tokens:
# vit_b 600 against 850-1190 ms, the demo model 124-146 against 249 ms.
CACHE_ELEMENTS = 2**22
CUDA_CONTEXT_MB = 500  # CUDA context, cuBLAS/cuDNN workspaces (not "allocated")
# resident before the model: Python, torch, micro_sam, data (measured)
CPU_BASE_MB = 900
# Encoder activations saved per token, in float32 channels: the norms, the MLP
# and the LoRA path (6 per token) and the qkv of every attended token (3,
# padding of windowed blocks included).
ENCODER_CHANNELS_PER_TOKEN = 6
ENCODER_CHANNELS_PER_ATTENDED = 3
# copies of the keys (in float32 bytes) each non-lean chunk saves
KEY_COPIES = {False: 1.0, True: 2.0}
# A decoder pass saves per object about 0.36 B x the prompt dimension per
# model-input pixel (the upscaled masks and their gradients) and 45 B per
# patch pixel (the targets and the loss at the patch's size); bf16 autocast
# about 0.85 of that.
DECODER_BYTES = (0.36, 45.0)
DECODER_BF16 = 0.85


def attention_rows(b: int, heads: int, h: int, w: int, lean: bool, cpu: bool) -> int:
    """Query rows per attention chunk of an (h x w)-token grid (``core.fastpath``)."""
    per_row = b * heads * w * h * w
    if not lean and not cpu:
        return h  # a GPU: one call
    return min(h, max(1, (LEAN_ELEMENTS if lean else CACHE_ELEMENTS) // per_row))


@functools.lru_cache(maxsize=32)
def _counts(arch_name: str, method_json: str, image_size: int) -> dict[str, int]:
    """Parameter counts of the model with its method applied (meta tensors: instant)."""
    import torch

    from .methods import apply_method, config_from_dict
    from .models import architecture_of, build_sam

    with torch.device("meta"):
        sam = build_sam(architecture_of(arch_name), image_size)
        apply_method(sam, config_from_dict(json.loads(method_json)))
    blocks = list(sam.image_encoder.blocks)
    trainable = [any(p.requires_grad for p in b.parameters()) for b in blocks]
    encoder = sam.image_encoder
    return {
        "total": sum(p.numel() for p in sam.parameters()),
        "trainable": sum(p.numel() for p in sam.parameters() if p.requires_grad),
        "encoder": sum(p.numel() for p in encoder.parameters()),
        "first_trainable_block": trainable.index(True) if any(trainable) else -1,
        "encoder_trains": int(any(p.requires_grad for p in encoder.parameters())),
    }


def counts_for(arch, method_cfg, image_size: int | None = None) -> dict[str, int]:
    """Parameter counts for ``arch`` with ``method_cfg`` applied."""
    method_json = json.dumps(method_cfg.to_dict(), sort_keys=True, default=str)
    return _counts(arch.name, method_json, image_size or arch.image_size)


def effective(level: str, train_cfg) -> tuple[bool, bool, int | None]:
    """(lean attention, checkpointed blocks, object chunk) of a memory-saving level."""
    lean = level in ("chunks", "checkpoint") and train_cfg.fast_path
    blocks = level == "checkpoint" or train_cfg.grad_checkpointing
    chunk = OBJECT_CHUNK if level in ("chunks", "checkpoint") else None
    return lean, blocks, chunk


def _encoder_mb(arch, size, batch, lean, blocks, first, cpu, bf16):
    """(saved activations, largest transient) of the encoder, in MB."""
    grid, c, ws = size // arch.patch_size, arch.embed_dim, arch.window_size
    tokens, heads = grid * grid, arch.num_heads
    windows = math.ceil(grid / ws) ** 2
    saved, transient = 0.0, 0.0
    for i in range(max(first, 0), arch.depth):
        is_global = i in arch.global_attn
        side, b = (grid, 1) if is_global else (ws, windows)
        attended = b * side * side
        block = 4 * c * ENCODER_CHANNELS_PER_TOKEN * tokens
        block += 4 * c * ENCODER_CHANNELS_PER_ATTENDED * attended
        scores = heads * b * side**4
        if lean:
            transient = max(transient, 5 * 4 * min(scores, LEAN_ELEMENTS))
        else:
            rows = attention_rows(b, heads, side, side, False, cpu)
            chunks = math.ceil(side / rows)
            keys = 4 * c * attended  # (b, heads, N, head dim) in float32
            block += 4 * scores + KEY_COPIES[bf16] * keys * chunks
            transient = max(transient, 3 * 4 * scores / chunks)
        if blocks:  # blocks keep their input; backward rebuilds one at a time
            transient = max(transient, block)
            block = 4 * c * tokens
        saved += block
    return batch * saved / 2**20, batch * transient / 2**20


def decoder_mb(arch, train_cfg, objects: int, size: int, bf16: bool) -> float:
    """What one decoder pass over ``objects`` holds with its backward, in MB."""
    patch = train_cfg.patch_size or size
    per_object = DECODER_BYTES[0] * arch.prompt_dim * size * size
    per_object += DECODER_BYTES[1] * patch * patch
    return objects * per_object * (DECODER_BF16 if bf16 else 1.0) / 2**20


def estimate_parts(
    arch, method_cfg, train_cfg, device, bf16: bool, level: str, image_size=None
) -> dict[str, float]:
    """The estimate's terms in MB (``estimate_peak_mb`` adds them up)."""
    size = image_size or arch.image_size
    counts = counts_for(arch, method_cfg, size)
    cpu = getattr(device, "type", device) == "cpu"
    lean, blocks, chunk = effective(level, train_cfg)
    weights = 4 * counts["total"] + (2 * counts["encoder"] if bf16 else 0)
    parts = {
        "process": CPU_BASE_MB if cpu else 0.0,
        "weights": weights / 2**20,
        "optimizer": 12 * counts["trainable"] / 2**20,
    }
    encoder, transient = 0.0, 0.0
    if counts["encoder_trains"]:
        first = counts["first_trainable_block"]
        encoder, transient = _encoder_mb(
            arch, size, train_cfg.batch_size, lean, blocks, first, cpu, bf16
        )
    objects = min(train_cfg.n_objects, chunk or train_cfg.n_objects)
    parts["encoder activations"] = encoder
    parts["step peak"] = max(
        transient, decoder_mb(arch, train_cfg, objects, size, bf16)
    )
    return parts


def estimate_peak_mb(
    arch,
    method_cfg,
    train_cfg,
    device,
    bf16: bool = False,
    level: str | None = None,
    image_size: int | None = None,
) -> float:
    """Peak memory in MB of a training step: resident (CPU) or allocated (CUDA).

    Parameters
    ----------
    arch
        The model's :class:`~napari_peft_sam.core.models.Architecture`.
    method_cfg
        The PEFT method's config.
    train_cfg
        The :class:`~napari_peft_sam.core.config.TrainConfig`.
    device
        ``torch.device`` or ``"cpu"`` / ``"cuda"``.
    bf16
        Whether the step runs under bfloat16 autocast.
    level
        Memory saving (``off``, ``chunks``, ``checkpoint``); default: the
        config's, ``auto`` counting as ``off``.
    image_size
        The model's input size, when not the architecture's.
    """
    level = level or getattr(train_cfg, "memory_saving", "auto")
    level = "off" if level == "auto" else level
    parts = estimate_parts(arch, method_cfg, train_cfg, device, bf16, level, image_size)
    return sum(parts.values())


def estimate_training_memory(arch, sam, cfg, method_cfg=None) -> float:
    """Megabytes a training step needs on a GPU, CUDA context included (Model widget).

    ``sam`` is not read (kept for the widget's call); pass ``method_cfg`` for
    the method's own parameter counts (LoRA's otherwise).
    """
    from .methods import make_config

    bf16 = cfg.precision != "float32"
    method = method_cfg or make_config("lora")
    return CUDA_CONTEXT_MB + estimate_peak_mb(arch, method, cfg, "cuda", bf16)
