"""SAM inference in memory: one embedding per image and model, prompts batched.

``Segmenter`` wraps a SAM model (base or fine-tuned). ``embed`` computes and
caches an image's embedding; ``predict`` turns batched prompts (points, boxes,
previous logits) into full-resolution masks, costing only the prompt encoder
and mask decoder (``core.decoding``: the image's share of the decoder once,
not once per object). Pre- and post-processing follow segment_anything's
``SamPredictor``: resize the longest side to the model's input size, pad,
normalise; upscale the low-resolution logits, crop the padding, resize back.
For small images the two bilinear resizes run as one linear map per axis on
the low-resolution logits (see ``Segmenter.upscale``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import decoding
from .objective import Prompts, decode, resize_matrix


@dataclass(frozen=True)
class Embedding:
    features: torch.Tensor  # (1, C, h, w)
    original_size: tuple[int, int]
    input_size: tuple[int, int]  # after resizing the longest side
    shared: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def scale(self) -> float:
        return self.input_size[0] / self.original_size[0]

    @property
    def xy_scale(self) -> torch.Tensor:
        """Per-axis (x, y) factors from image to model pixels, as ``ResizeLongestSide``."""
        (h, w), (new_h, new_w) = self.original_size, self.input_size
        return torch.tensor([new_w / w, new_h / h], device=self.features.device)


def image_key(image: np.ndarray) -> str:
    """A content hash of an image, for the embedding cache."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).view(np.uint8), digest_size=16)
    digest.update(str(image.shape).encode())
    return digest.hexdigest()


class Segmenter:
    """Prompt-to-mask inference with cached embeddings for one model.

    Parameters
    ----------
    sam
        A segment_anything ``Sam`` (base or fine-tuned).
    device
        Where it runs.
    cache_size
        Embeddings kept (least recently used dropped first).
    fast_path
        Patch the image encoder's attention (``core.fastpath``).
    autocast
        None for float32; ``torch.bfloat16`` runs the image encoder under
        autocast and the mask decoder on a bfloat16 copy (see
        ``core.device.autocast_for(..., purpose="infer")`` for the choice).
    """

    def __init__(
        self,
        sam,
        device: str | torch.device = "cpu",
        cache_size: int = 16,
        fast_path: bool = True,
        autocast: torch.dtype | None = None,
    ):
        if fast_path:
            from .fastpath import enable_fast_path

            enable_fast_path(sam)
        self.sam = sam.to(device).eval()
        self.device = torch.device(device)
        self.size = sam.image_encoder.img_size
        self.autocast = autocast
        self._cache: OrderedDict[str, Embedding] = OrderedDict()
        self.cache_size = cache_size
        self._resize: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.shared_decoder = decoding.supported(self.sam.mask_decoder)
        self._decoder = self.sam.mask_decoder
        if autocast is not None and self.shared_decoder:
            import copy

            self._decoder = copy.deepcopy(self.sam.mask_decoder).to(autocast)

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
        with torch.autocast(
            self.device.type, self.autocast, enabled=self.autocast is not None
        ):
            features = self.sam.image_encoder(x).float()
        embedding = Embedding(features, (h, w), (new_h, new_w))
        self._cache[key] = embedding
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return embedding

    def upscale(self, low_res: torch.Tensor, emb: Embedding) -> torch.Tensor:
        """Low-res logits (n, m, 256, 256) -> logits at the original image size.

        segment_anything's ``postprocess_masks``: upscale to the input size,
        crop the padding, resize to the image. Where the image is small (the
        usual microscopy crop against a 1024 px model) the same map runs as
        two small matrix products on the low-resolution logits, without the
        (n, m, 1024, 1024) intermediate.
        """
        (h, w), (big_h, big_w) = low_res.shape[-2:], emb.original_size
        if h * big_w * (w + big_h) > 100 * (self.size**2 + big_h * big_w):
            x = F.interpolate(
                low_res, (self.size, self.size), mode="bilinear", align_corners=False
            )
            x = x[..., : emb.input_size[0], : emb.input_size[1]]
            return F.interpolate(
                x, emb.original_size, mode="bilinear", align_corners=False
            )
        key = (h, w, emb.input_size, emb.original_size)
        if key not in self._resize:
            rows = resize_matrix(h, self.size, emb.input_size[0], big_h)
            cols = resize_matrix(w, self.size, emb.input_size[1], big_w)
            self._resize[key] = rows.to(self.device), cols.T.to(self.device)
        rows, cols_t = self._resize[key]
        return rows.to(low_res.dtype) @ (low_res @ cols_t.to(low_res.dtype))

    def _decode(self, emb: Embedding, p: Prompts, multimask: bool):
        if p.masks is not None or not self.shared_decoder:
            with torch.autocast(
                self.device.type, self.autocast, enabled=self.autocast is not None
            ):
                low_res, iou = decode(self.sam, emb.features, p, multimask)
            return low_res.float(), iou.float()
        if "decoder" not in emb.shared:
            emb.shared["decoder"] = decoding.prepare(
                self.sam, emb.features, self._decoder
            )
        points = None if p.points is None else (p.points, p.labels)
        sparse, _ = self.sam.prompt_encoder(points=points, boxes=p.boxes, masks=None)
        side = tuple(emb.features.shape[-2:])
        return decoding.decode_shared(
            self.sam, emb.shared["decoder"], side, sparse, multimask, 16, self._decoder
        )

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
        scale = emb.xy_scale
        p = Prompts(
            points=None if points is None else points.to(self.device).float() * scale,
            labels=None if labels is None else labels.to(self.device),
            boxes=None
            if boxes is None
            else boxes.to(self.device).float() * scale.repeat(2),
            masks=mask_inputs,
        )
        low_res, iou = self._decode(emb, p, multimask)
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
