"""The automatic-instance-segmentation (AIS) decoder, trained jointly as micro-sam does.

micro-sam's ``JointSamTrainer`` adds a UNETR decoder on the SAM image encoder
that predicts foreground and centre / boundary distances (targets from
torch_em's ``PerObjectDistanceTransform``, loss ``DiceBasedDistanceLoss``);
each iteration takes a second optimizer step on that loss. At inference the
decoder runs on the cached image embedding (micro-sam's ``DecoderAdapter``)
and a seeded watershed turns its output into instances (``ais``, see
``core.automatic``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def build_unetr(sam, state: dict | None = None, device="cpu"):
    """micro-sam's UNETR sharing ``sam``'s image encoder."""
    from micro_sam.instance_segmentation import get_unetr

    return get_unetr(sam.image_encoder, decoder_state=state, device=device)


def decoder_parameters(unetr) -> list[torch.nn.Parameter]:
    return [p for name, p in unetr.named_parameters() if not name.startswith("encoder")]


def decoder_state(unetr) -> dict[str, torch.Tensor]:
    """The decoder's own tensors (the encoder is the SAM model's)."""
    return {k: v for k, v in unetr.state_dict().items() if not k.startswith("encoder")}


class Targets:
    """Foreground, centre and boundary distance targets of a label patch."""

    def __init__(self) -> None:
        from torch_em.transform.label import PerObjectDistanceTransform

        self.transform = PerObjectDistanceTransform(
            distances=True,
            boundary_distances=True,
            directed_distances=False,
            foreground=True,
            instances=True,
            min_size=25,
        )

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        return self.transform(labels)[1:].astype(np.float32)


def unetr_loss(unetr, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``DiceBasedDistanceLoss`` of the UNETR on (B, P, P, 3) images in 0..255."""
    from torch_em.loss import DiceBasedDistanceLoss

    prediction = unetr(images.permute(0, 3, 1, 2))
    return DiceBasedDistanceLoss(mask_distances_in_bg=True)(prediction, targets)


def decoder_path(run_dir, tag: str = "best") -> Path:
    return Path(run_dir) / f"decoder_{tag}.pt"


def load_adapter_decoder(run_dir, sam, tag: str = "best", device="cpu"):
    """The run's AIS decoder (on ``sam``'s embeddings), or None if it has none."""
    from micro_sam.instance_segmentation import get_decoder

    path = decoder_path(run_dir, tag)
    if not path.is_file():
        return None
    from .checkpoints import load_tensors

    state = load_tensors(path)
    return get_decoder(sam.image_encoder, state, device=device)
