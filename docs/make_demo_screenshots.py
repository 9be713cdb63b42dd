"""Screenshots of the demo model's masks on held-out synthetic nuclei, beside the truth.

    xvfb-run -a .venv/bin/python docs/make_demo_screenshots.py [--out docs/images]

For each of the first ``--images`` held-out synthetic images (seed
``core.synthetic.HELD_OUT_SEED``, never trained on) it opens napari with three
panels: the ground truth with the box prompts derived from it, the masks from
one point per object (its centre), and the masks from one box per object. The
masks are painted as micro-sam's evaluation paints them (every connected
piece its own object), so fragments show as extra colours. The caption gives
the image's single point / single box mSA. Writes ``demo_model_<k>.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# torchvision must be imported before napari creates its OpenGL canvas: the other
# order segfaults under Mesa software OpenGL (design.md).
import torch
import torchvision  # noqa: F401

from napari_peft_sam.core.evaluation import gt_prompts
from napari_peft_sam.core.inference import Segmenter, masks_to_segmentation
from napari_peft_sam.core.metrics import mean_segmentation_accuracy
from napari_peft_sam.core.models import load_base_model
from napari_peft_sam.core.synthetic import held_out_dataset

PANELS = ("ground truth", "masks from points", "masks from boxes")


def predictions(segmenter: Segmenter, sample) -> dict:
    """Prompts and the instance segmentations they give, as the evaluation makes them."""
    ids, centres, boxes = gt_prompts(sample.labels)
    emb = segmenter.embed(sample.image)
    points = torch.from_numpy(centres)[:, None]
    ones = torch.ones(points.shape[:2], dtype=torch.int64)
    from_points, _ = segmenter.predict(emb, points, ones, multimask=True)
    from_boxes, _ = segmenter.predict(emb, boxes=torch.from_numpy(boxes))
    shape = sample.labels.shape
    return {
        "centres": centres,
        "boxes": boxes,
        "points": masks_to_segmentation(from_points.numpy(), shape),
        "box": masks_to_segmentation(from_boxes.numpy(), shape),
    }


def add_panel(viewer, sample, labels, name, prompts=None, kind=None) -> None:
    """One grid cell: the image, a labels layer, and the prompts (or a title only)."""
    viewer.add_image(sample.image[..., 0], name=f"{name}: image", colormap="gray")
    layer = viewer.add_labels(labels, name=name, opacity=0.55)
    layer.contour = 0
    if kind == "box":
        rectangles = [[[y0, x0], [y1, x1]] for x0, y0, x1, y1 in prompts]
        viewer.add_shapes(
            rectangles,
            shape_type="rectangle",
            edge_color="yellow",
            face_color="transparent",
            edge_width=0.6,
            name=f"{name}: boxes",
        )
    else:
        yx = prompts[:, ::-1] if prompts is not None else np.zeros((0, 2))
        viewer.add_points(
            yx,
            size=4,
            face_color="yellow",
            border_width=0,
            name=f"{name}: points",
        )


def settle() -> None:
    """Let Qt lay out and paint the window before the camera and the screenshot."""
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()


def screenshot(viewer, sample, result, scores, path: Path) -> Path:
    viewer.layers.clear()
    # napari fills grid cells from the top of the layer list: add the last panel first
    add_panel(viewer, sample, result["box"], PANELS[2], result["boxes"], "box")
    add_panel(viewer, sample, result["points"], PANELS[1], result["centres"])
    add_panel(viewer, sample, sample.labels, PANELS[0], result["boxes"], "box")
    viewer.grid.enabled = True
    viewer.grid.shape = (1, 3)
    viewer.grid.stride = 3
    viewer.text_overlay.visible = True
    viewer.text_overlay.font_size = 11
    viewer.text_overlay.color = "white"
    viewer.text_overlay.text = (
        f"{sample.n_objects} nuclei | {PANELS[0]} and box prompts | "
        f"{PANELS[1]}: mSA {scores['points']:.2f} | "
        f"{PANELS[2]}: mSA {scores['box']:.2f}"
    )
    settle()
    viewer.reset_view()
    settle()
    viewer.screenshot(str(path), canvas_only=True, flash=False)
    return path


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images")
    parser.add_argument(
        "--checkpoint", type=Path, help="demo weights (default: shipped)"
    )
    parser.add_argument("--images", type=int, default=3)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sam, _ = load_base_model("demo", args.checkpoint)
    segmenter = Segmenter(sam)
    samples = list(held_out_dataset(args.images))

    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 620)
    settle()
    written = []
    for k, sample in enumerate(samples):
        result = predictions(segmenter, sample)
        scores = {
            key: mean_segmentation_accuracy(result[key], sample.labels)
            for key in ("points", "box")
        }
        written.append(
            screenshot(viewer, sample, result, scores, args.out / f"demo_model_{k}.png")
        )
        print(
            f"wrote {written[-1]} (mSA point {scores['points']:.3f}, box {scores['box']:.3f})"
        )
    viewer.close()
    return written


if __name__ == "__main__":
    main()
