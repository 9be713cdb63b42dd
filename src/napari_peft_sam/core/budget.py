"""An estimate of the GPU memory a training run needs, from shapes alone.

The GUI shows it next to the trainable-parameter count, before anything is
loaded, so that a user picks settings that fit their card. It is a sum of the
terms that dominate SAM fine-tuning, rounded up; the exact figure depends on
the CUDA allocator and the kernels chosen.
"""

from __future__ import annotations

from torch import nn

CUDA_CONTEXT_MB = 500  # CUDA context, cuBLAS/cuDNN workspaces
# activations kept per token and channel of an encoder block for backward
# (norms, qkv, attention output, projection, MLP hidden and GELU output)
SAVED_PER_BLOCK = 16


def estimate_training_memory(arch, sam: nn.Module, cfg) -> float:
    """Megabytes a training step of ``sam`` (method applied) needs on a GPU.

    Parameters
    ----------
    arch
        The model's :class:`~napari_peft_sam.core.models.Architecture`.
    sam
        The model with the PEFT method applied (meta tensors are fine).
    cfg
        The :class:`~napari_peft_sam.core.config.TrainConfig`.
    """
    total = sum(p.numel() for p in sam.parameters())
    trainable = sum(p.numel() for p in sam.parameters() if p.requires_grad)
    act_bytes = 4 if cfg.precision == "float32" else 2
    weights = 4 * total
    optimizer = trainable * (4 + 8)  # gradient + AdamW moments, float32
    tokens = (arch.image_size // arch.patch_size) ** 2
    blocks = list(sam.image_encoder.blocks)
    first = next(
        (
            i
            for i, b in enumerate(blocks)
            if any(p.requires_grad for p in b.parameters())
        ),
        len(blocks),
    )
    kept = SAVED_PER_BLOCK if not cfg.grad_checkpointing else 1
    encoder = (len(blocks) - first) * tokens * arch.embed_dim * kept * act_bytes
    encoder *= cfg.batch_size
    # every sub-iteration decodes all objects: upscaled logits and mask inputs
    low_res = (arch.image_size // 4) ** 2
    decoder = cfg.batch_size * cfg.n_objects * (cfg.n_sub_iterations + 1)
    decoder *= (low_res * 16 + tokens * arch.prompt_dim * 8) * act_bytes
    total_bytes = weights + optimizer + encoder + decoder
    return CUDA_CONTEXT_MB + total_bytes / 2**20
