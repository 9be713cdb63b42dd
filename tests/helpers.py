"""Small helpers for tests: a full SAM forward pass from image to masks."""

import torch


def sam_forward(sam, image: torch.Tensor, point=None, multimask=True):
    """Image (B, 3, S, S) in 0..255 -> (low-res mask logits, predicted IoU)."""
    size = sam.image_encoder.img_size
    point = point if point is not None else (size / 2, size / 3)
    embeddings = sam.image_encoder(sam.preprocess(image))
    batch = image.shape[0]
    coords = torch.tensor([[point]], dtype=torch.float32).expand(batch, 1, 2)
    labels = torch.ones(batch, 1, dtype=torch.int64)
    sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    masks, iou = sam.mask_decoder(
        image_embeddings=embeddings,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
    return masks, iou


def make_image(size: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g) * 255


def perturb_trainable(model, seed: int = 1, std: float = 0.05) -> None:
    """Give every trainable tensor non-trivial values, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * std)
