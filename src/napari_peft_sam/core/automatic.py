"""Automatic segmentation for the ais and amg metrics, with an optional small search.

Both run micro-sam's segmenters (``InstanceSegmentationWithDecoder`` for ais,
``AutomaticMaskGenerator`` for amg) on our cached embedding: ``initialize``
once per image, then ``generate`` once per post-processing setting, so a
search over settings costs little beyond the first run.
"""

from __future__ import annotations

import itertools

import numpy as np

from . import catalog
from . import metrics as m

AIS, AMG = catalog.AIS.automatic, catalog.AMG.automatic
GRIDS = {
    AIS: {
        "center_distance_threshold": [0.3, 0.5, 0.7],
        "boundary_distance_threshold": [0.3, 0.5, 0.7],
    },
    AMG: {"pred_iou_thresh": [0.75, 0.88], "stability_score_thresh": [0.85, 0.95]},
}


def default_settings(kind: str) -> dict:
    """micro-sam's defaults for the post-processing settings that ``GRIDS`` varies."""
    import inspect

    from micro_sam.instance_segmentation import (
        AutomaticMaskGenerator,
        InstanceSegmentationWithDecoder,
    )

    generator = {AIS: InstanceSegmentationWithDecoder, AMG: AutomaticMaskGenerator}
    parameters = inspect.signature(generator[kind].generate).parameters
    return {name: parameters[name].default for name in GRIDS[kind]}


def _segmenter(kind: str, segmenter, decoder):
    from micro_sam.instance_segmentation import (
        AutomaticMaskGenerator,
        InstanceSegmentationWithDecoder,
    )
    from segment_anything import SamPredictor

    predictor = SamPredictor(segmenter.sam)
    if kind == AIS:
        return InstanceSegmentationWithDecoder(predictor, decoder)
    return AutomaticMaskGenerator(predictor)


def segmentations(
    kind: str, segmenter, image: np.ndarray, decoder=None, settings=({},)
) -> list[np.ndarray]:
    """Instances of ``image`` for each post-processing setting (defaults: one run)."""
    emb = segmenter.embed(image)
    automatic = _segmenter(kind, segmenter, decoder)
    automatic.initialize(
        np.clip(image, 0, 255).astype(np.uint8),
        image_embeddings={
            "features": emb.features,
            "input_size": emb.input_size,
            "original_size": emb.original_size,
        },
    )
    out = []
    for setting in settings:
        segmentation = automatic.generate(**setting)
        if (
            not isinstance(segmentation, np.ndarray)
            or segmentation.shape != image.shape[:2]
        ):
            segmentation = np.zeros(
                image.shape[:2], np.int32
            )  # nothing passed the filters
        out.append(segmentation.astype(np.int32))
    return out


def tune(kind: str, segmenter, dataset, decoder=None) -> tuple[dict, float]:
    """The setting of ``GRIDS[kind]`` with the best mean mSA on ``dataset``."""
    grid = GRIDS[kind]
    settings = [
        dict(zip(grid, values, strict=True))
        for values in itertools.product(*grid.values())
    ]
    scores = np.zeros(len(settings))
    for sample in dataset:
        for k, seg in enumerate(
            segmentations(kind, segmenter, sample.image, decoder, settings)
        ):
            scores[k] += m.mean_segmentation_accuracy(seg, sample.labels) / len(dataset)
    best = int(np.argmax(scores))
    return settings[best], float(scores[best])
