"""SAM inference in memory: one embedding per image and model, prompts batched.

``Segmenter`` wraps a SAM model (base or fine-tuned). ``embed`` computes and
caches an image's embedding; ``predict`` turns batched prompts (points, boxes,
previous logits) into full-resolution masks, costing only the prompt encoder
and mask decoder. Pre- and post-processing follow segment_anything's
``SamPredictor``: resize the longest side to the model's input size, pad,
normalise; upscale the low-resolution logits, crop the padding, resize back.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .objective import Prompts, decode


@dataclass(frozen=True)
class Embedding:
    features: torch.Tensor  # (1, C, h, w)
    original_size: tuple[int, int]
    input_size: tuple[int, int]  # after resizing the longest side

    @property
    def scale(self) -> float:
        return self.input_size[0] / self.original_size[0]


def image_key(image: np.ndarray) -> str:
    """A content hash of an image, for the embedding cache."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).view(np.uint8), digest_size=16)
    digest.update(str(image.shape).encode())
    return digest.hexdigest()


class Segmenter:
    """Prompt-to-mask inference with cached embeddings for one model."""

    def __init__(
        self,
        sam,
        device: str | torch.device = "cpu",
        cache_size: int = 16,
        fast_path: bool = True,
    ):
        if fast_path:
            from .fastpath import enable_fast_path

            enable_fast_path(sam)
        self.sam = sam.to(device).eval()
        self.device = torch.device(device)
        self.size = sam.image_encoder.img_size
        self._cache: OrderedDict[str, Embedding] = OrderedDict()
        self.cache_size = cache_size

    @torch.no_grad()
    def embed(self, image: np.ndarray, key: str | None = None) -> Embedding:
        """The embedding of a normalised (H, W, 3) image, computed once.

        ``key`` names the image in the cache (the GUI passes layer and plane);
        without it the image's content is hashed.
        """
        key = key or image_key(image)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        h, w = image.shape[:2]
        scale = self.size / max(h, w)
        new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        x = x.permute(2, 0, 1)[None].float()
        x = F.interpolate(
            x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )
        x = (x - self.sam.pixel_mean) / self.sam.pixel_std
        x = F.pad(x, (0, self.size - new_w, 0, self.size - new_h))
        embedding = Embedding(self.sam.image_encoder(x), (h, w), (new_h, new_w))
        self._cache[key] = embedding
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return embedding

    def upscale(self, low_res: torch.Tensor, emb: Embedding) -> torch.Tensor:
        """Low-res logits (n, m, 256, 256) -> logits at the original image size."""
        x = F.interpolate(
            low_res, (self.size, self.size), mode="bilinear", align_corners=False
        )
        x = x[..., : emb.input_size[0], : emb.input_size[1]]
        return F.interpolate(x, emb.original_size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(
        self,
        emb: Embedding,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks (n, H, W) bool and the chosen low-res logits (n, 1, 256, 256).

        Coordinates are (x, y) in original image pixels; with ``multimask`` the
        mask with the highest predicted IoU is kept, as micro-sam does.
        """
        p = Prompts(
            points=None
            if points is None
            else points.to(self.device).float() * emb.scale,
            labels=None if labels is None else labels.to(self.device),
            boxes=None if boxes is None else boxes.to(self.device).float() * emb.scale,
            masks=mask_inputs,
        )
        low_res, iou = decode(self.sam, emb.features, p, multimask)
        best = iou.argmax(dim=1)
        rows = torch.arange(len(best), device=best.device)
        low_res = low_res[rows, best][:, None]
        return self.upscale(low_res, emb)[:, 0] > 0, low_res

    def segment(
        self,
        image: np.ndarray,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        key: str | None = None,
    ) -> np.ndarray:
        """One object's mask from interactive prompts (the GUI's click path).

        ``points`` are (x, y) pixels with ``labels`` 1 (positive) or 0
        (negative); ``box`` is (x0, y0, x1, y1). The embedding is computed on
        the first call for an image and reused, so later clicks cost only the
        prompt encoder and mask decoder.
        """
        has_points = points is not None and len(points) > 0
        if not has_points and box is None:
            return np.zeros(image.shape[:2], bool)
        emb = self.embed(image, key)
        pts = lab = bx = None
        if has_points:
            pts = torch.as_tensor(np.asarray(points, np.float32))[None]
            lab = torch.as_tensor(np.asarray(labels, np.int64))[None]
        if box is not None:
            bx = torch.as_tensor(np.asarray(box, np.float32))[None]
        single_point = has_points and len(points) == 1 and box is None
        masks, _ = self.predict(emb, pts, lab, bx, multimask=single_point)
        return masks[0].cpu().numpy()


def masks_to_segmentation(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per-object masks -> instance labels as micro-sam writes them.

    Larger masks are painted first so smaller ones stay on top, then each
    connected region becomes its own object (micro-sam's
    ``mask_data_to_segmentation`` with its defaults).
    """
    from skimage.measure import label

    if len(masks) == 0:
        return np.zeros(shape, np.int32)
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    segmentation = np.zeros(shape, np.int32)
    for i, k in enumerate(np.argsort(-areas, kind="stable")):
        segmentation[masks[k]] = i + 1
    return label(segmentation, background=0, connectivity=1).astype(np.int32)
