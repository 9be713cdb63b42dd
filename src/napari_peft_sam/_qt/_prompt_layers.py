"""The prompt tester's layers: prompts, the two masks and the committed objects.

The tuned model's mask is filled, the base model's drawn as an outline, each
in one fixed colour that the legend names; committed objects get napari's
label colours, one per object, so none of them looks like a live mask.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Labels, Points, Shapes
from napari.utils.colormaps import DirectLabelColormap

from ..core import catalog

POINTS, BOXES = "prompts", "box prompts"
MASK, BASE_MASK, COMMITTED = "mask (model)", "mask (base model)", "committed objects"
MODEL_COLOUR, BASE_COLOUR = "#00e5ff", "#ff9f1a"
LEGEND = (
    f'<span style="color:{MODEL_COLOUR}">&#9632; model (filled)</span> · '
    f'<span style="color:{BASE_COLOUR}">&#9633; base model (outline)</span> · '
    "committed objects: a colour each"
)


def _one_colour(value: int, colour: str) -> DirectLabelColormap:
    return DirectLabelColormap(
        color_dict={None: "transparent", 0: "transparent", value: colour}
    )


def find(viewer, name: str):
    """The layer called ``name``, or None (the viewer proxy has no ``get``)."""
    return viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401


def plane(viewer, layer) -> np.ndarray:
    """The 2D image (or RGB image) the viewer shows of ``layer`` now."""
    data = np.asarray(layer.data)
    extra = layer.ndim - 2
    if extra <= 0:
        return data
    coords = layer.world_to_data(viewer.dims.point[-layer.ndim :])
    index = tuple(
        int(np.clip(round(c), 0, n - 1))
        for c, n in zip(coords[:extra], data.shape, strict=False)
    )
    return data[index]


def ensure_layers(viewer, shape: tuple[int, int]) -> tuple[Points, Shapes]:
    """The prompt layers and the mask layers for an image of ``shape``."""

    def layer(name, make):
        if name not in viewer.layers:
            viewer.add_layer(make())
        return viewer.layers[name]

    points = layer(
        POINTS,
        lambda: Points(
            name=POINTS,
            ndim=2,
            features={"positive": np.zeros(0, bool)},
            face_color="positive",
            face_color_cycle=["#ff3030", "#30d040"],
            size=max(6, shape[0] // 60),
        ),
    )
    boxes = layer(
        BOXES,
        lambda: Shapes(
            name=BOXES,
            ndim=2,
            edge_color="#ffd000",
            face_color="transparent",
            edge_width=2,
        ),
    )
    layer(
        COMMITTED,
        lambda: Labels(np.zeros(shape, np.int32), name=COMMITTED, opacity=0.5),
    )
    for name, value, colour, outline in (
        (BASE_MASK, 2, BASE_COLOUR, True),
        (MASK, 1, MODEL_COLOUR, False),
    ):
        mask = layer(
            name, lambda n=name: Labels(np.zeros(shape, np.int32), name=n, opacity=0.6)
        )
        mask.colormap = _one_colour(value, colour)
        mask.contour = max(1, shape[0] // 200) if outline else 0
        if outline:
            mask.opacity = 1.0
    return points, boxes


def show_mask(layer, mask: np.ndarray | None) -> None:
    """Put ``mask`` (None: empty) into its layer in place (``data_setitem``
    uploads only the changed pixels; new ``data`` re-slices the layer)."""
    data, value = np.asarray(layer.data), 1 if layer.name == MASK else 2
    if mask is not None and mask.shape != data.shape:  # another image's size
        layer.data = np.asarray(mask, data.dtype) * value
        return
    new = np.zeros(data.shape, data.dtype)
    if mask is not None:
        new[mask] = value
    changed = np.nonzero(data != new)
    if len(changed[0]):
        layer.data_setitem(changed, new[changed])


def clear_prompts(viewer) -> None:
    """Empty the prompt and mask layers; no selection is left pointing at a
    deleted point (napari would colour it on the next sign change)."""
    for name in (POINTS, BOXES):
        layer = find(viewer, name)
        if layer is not None:
            layer.selected_data = set()
            layer.data = []
    for name in (MASK, BASE_MASK):
        layer = find(viewer, name)
        if layer is not None:
            layer.data = np.zeros_like(np.asarray(layer.data))


def set_sign(viewer, positive: bool) -> None:
    """The colour and feature of the next point."""
    layer = find(viewer, POINTS)
    if layer is None:
        return
    # a selection of points that no longer exist raises inside napari
    if any(i >= len(layer.data) for i in layer.selected_data):
        layer.selected_data = set()
    layer.feature_defaults = {"positive": positive}
    layer.current_face_color = "#30d040" if positive else "#ff3030"


def prompt_arrays(viewer) -> dict:
    """The points (x, y), their signs and the last box drawn, as the model takes them."""
    points, boxes = find(viewer, POINTS), find(viewer, BOXES)
    out: dict = {"points": None, "labels": None, "box": None}
    if points is not None and len(points.data):
        yx = np.asarray(points.data)[:, -2:]
        out["points"] = yx[:, ::-1].astype(np.float32)
        out["labels"] = np.asarray(points.features["positive"], np.int64)
    if boxes is not None and len(boxes.data):
        corners = np.asarray(boxes.data[-1])[:, -2:]
        (y0, x0), (y1, x1) = corners.min(0), corners.max(0)
        out["box"] = np.array([x0, y0, x1, y1], np.float32)
    return out


def automatic_summary(result: dict) -> str:
    """The readout of 'Segment everything'."""
    n = len(np.unique(result["labels"])) - 1
    if n:
        return f"Segment everything: {n} objects ({result['kind']})."
    filters = ", ".join(f"{k} {v}" for k, v in result["settings"].items())
    text = (
        f"Segment everything ({result['kind']}): no object passed the "
        f"filters ({filters})."
    )
    if result["kind"] == catalog.AMG.automatic:
        text += (
            " A run trained with the AIS decoder segments everything "
            "better; points and boxes still work."
        )
    return text
