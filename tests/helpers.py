"""Small helpers for tests: a full SAM forward pass from image to masks; the
checksums of the user's files and the one sentence of a refused command."""

import hashlib
from pathlib import Path

import torch


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` with a hash of its bytes (and every folder)."""
    out = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for p in paths:
            out[str(p)] = (
                hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            )
    return out


def sentence(err: str) -> str:
    """``err`` (a command's stderr), checked to be one line: ``error: ...``."""
    err = err.strip()
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert "\n" not in err, err
    return err


def one_sentence(capsys) -> str:
    """The one sentence a refused command printed (captured by pytest)."""
    return sentence(capsys.readouterr().err)


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
