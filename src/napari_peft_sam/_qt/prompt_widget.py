"""Prompt tester: points and boxes -> masks as you click, beside the base model's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from ..core import requests
from ..core.metrics import matched_iou
from ._models import chosen, fill_models, known_runs, model_request
from ._prompt_layers import (
    BASE_MASK,
    COMMITTED,
    LEGEND,
    MASK,
    automatic_summary,
    clear_prompts,
    ensure_layers,
    find,
    plane,
    prompt_arrays,
    set_sign,
    show_mask,
)
from ._session import notify_failure, session_for
from .data_widget import LayerCombo

NONE = "(none)"


# Qt paints at low priority: a reply that arrives before the Qt thread goes
# back to its event loop is handled before the pending redraw, so the point
# just placed and its mask appear in one canvas redraw instead of two. A slow
# reply (the first click embeds the image) is not waited for.
CLICK_WAIT_S = 0.15  # a click: ms on the demo model, ~0.1 s for vit_b on a CPU


class PromptWidget(QWidget):
    """Interactive segmentation with any base model or trained run."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self._sent: dict[str, int] = {}  # image key -> service generation it went to
        self._busy: dict[str, bool] = {}  # mask layer -> request in flight
        self._dirty: dict[str, bool] = {}
        self.ious: dict[str, float] = {}
        self.latencies: list[float] = []
        # effort of the committed objects on this image: clicks (points and boxes)
        # and seconds from an object's first prompt to its commit
        self.effort: list[dict[str, float]] = []
        self._clicks, self._first_click = 0, None

        self.model = QComboBox()
        self.compare = QCheckBox("compare with")
        self.base = QComboBox()
        self.image = LayerCombo(napari_viewer, Image)
        self.truth = QComboBox()
        self.positive = QRadioButton("positive")
        self.negative = QRadioButton("negative")
        self.positive.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.positive)
        group.addButton(self.negative)
        self.start_button = QPushButton("Start prompting")
        self.commit_button = QPushButton("Commit object")
        self.clear_button = QPushButton("Clear prompts")
        self.undo_button = QPushButton("Undo last commit")
        self.undo_button.setEnabled(False)
        self.legend = QLabel(LEGEND)
        self.legend.setWordWrap(True)  # one line would widen the dock past the screen
        self.legend.setVisible(False)
        self.auto_button = QPushButton("Segment everything")
        self.readout = QLabel(
            "Pick a model and an image, then press 'Start prompting'."
        )
        self.readout.setWordWrap(True)
        self.auto_readout = QLabel()
        self.auto_readout.setWordWrap(True)

        form = QFormLayout()
        form.addRow("model", self.model)
        compare = QHBoxLayout()
        compare.addWidget(self.compare)
        compare.addWidget(self.base, 1)
        form.addRow("", compare)
        form.addRow("image", self.image)
        form.addRow("ground truth", self.truth)
        sign = QHBoxLayout()
        sign.addWidget(self.positive)
        sign.addWidget(self.negative)
        form.addRow("next point", sign)
        buttons = QHBoxLayout()
        buttons.addWidget(self.commit_button)
        buttons.addWidget(self.clear_button)
        buttons.addWidget(self.undo_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.start_button)
        layout.addLayout(buttons)
        layout.addWidget(self.auto_button)
        layout.addWidget(self.legend)
        layout.addWidget(self.readout)
        layout.addWidget(self.auto_readout)
        layout.addStretch()

        self.start_button.clicked.connect(self.start)
        self.commit_button.clicked.connect(self.commit)
        self.clear_button.clicked.connect(self.clear)
        self.undo_button.clicked.connect(self.undo)
        self.auto_button.clicked.connect(self.segment_everything)
        self.positive.toggled.connect(self._set_sign)
        self.model.currentTextChanged.connect(lambda *_: self._model_changed())
        self.compare.toggled.connect(lambda *_: self.update_masks())
        for event in (
            napari_viewer.layers.events.inserted,
            napari_viewer.layers.events.removed,
        ):
            event.connect(self._refresh_truth)
        self._refresh_truth()
        self.session.models_changed.connect(self._refresh_models)
        self.session.open_run.connect(self.load_run)
        self.session.when_ready(lambda _c: self._refresh_models())

    # -- pickers -------------------------------------------------------------------------

    def _refresh_models(self) -> None:
        models = (self.session.catalog or {"models": []})["models"]
        fill_models(self.model, models, known_runs(self.session))
        fill_models(self.base, models, [])
        self.session.prompt.model = chosen(self.model)

    def _refresh_truth(self, *_) -> None:
        current = self.truth.currentText()
        self.truth.clear()
        names = [lyr.name for lyr in self.viewer.layers if isinstance(lyr, Labels)]
        ours = {MASK, BASE_MASK, COMMITTED}
        self.truth.addItems(
            [
                NONE,
                *[n for n in names if n not in ours and not n.startswith("automatic")],
            ]
        )
        self.truth.setCurrentText(current or NONE)

    def load_run(self, run_dir: str) -> None:
        """Pick a run (from the results table) as the model being tried."""
        self.session.add_run(run_dir)
        self._refresh_models()
        self.model.setCurrentIndex(self.model.findData(run_dir))

    # -- layers --------------------------------------------------------------------------

    def start(self) -> None:
        image = self.image.layer()
        if image is None:
            self.session.info("Open an image first (File > Open Sample > PEFT-SAM).")
            return
        points, boxes = ensure_layers(self.viewer, plane(self.viewer, image).shape[:2])
        self.viewer.layers[BASE_MASK].visible = self.compare.isChecked()
        self.legend.setVisible(self.compare.isChecked())
        points.events.data.connect(self._on_prompts)
        boxes.events.data.connect(self._on_prompts)
        self._set_sign(self.positive.isChecked())
        points.mode = "add"
        self.viewer.layers.selection.active = points
        self.session.prompt.image = image.name
        self.readout.setText(
            "Click objects: positive points in green, negative in red; draw boxes in 'box prompts'."
        )

    def _set_sign(self, positive: bool) -> None:
        set_sign(self.viewer, positive)

    def _model_changed(self) -> None:
        self.session.prompt.model = chosen(self.model)
        self.update_masks()

    # -- prompts -> masks ----------------------------------------------------------------

    def prompts(self) -> dict[str, Any]:
        return prompt_arrays(self.viewer)

    def _image_key(self) -> str | None:
        image = self.image.layer()
        if image is None:
            return None
        step = self.viewer.dims.current_step[: max(image.ndim - 2, 0)]
        # new data is a new array (napari replaces layer.data), so its id is a version
        key = f"{image.name}:{id(image.data)}:{step}"
        generation = self.session.service.ensure_running()  # a restart forgets images
        if self._sent.get(key) != generation:
            self.session.call(requests.SetImage(key, plane(self.viewer, image)))
            self._sent[key] = generation
        return key

    def _on_prompts(self, event=None) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.endswith("added"):  # a click (point) or a drawn box
            self._clicks += len(getattr(event, "data_indices", ()) or (0,))
            self._first_click = self._first_click or time.perf_counter()
        # napari also announces a change ('adding') before it: not for the model
        if not action.endswith("ing"):
            self.update_masks()

    def update_masks(self) -> None:
        if MASK not in self.viewer.layers:
            return
        self._request(MASK, chosen(self.model))
        compare = self.compare.isChecked()
        base = find(self.viewer, BASE_MASK)
        if base is not None and base.visible != compare:  # a refresh only on change
            base.visible = compare
        self.legend.setVisible(compare)
        if compare:
            self._request(BASE_MASK, chosen(self.base))

    def _request(self, layer_name: str, model: str) -> None:
        if not model:
            return
        if self._busy.get(layer_name):
            self._dirty[layer_name] = True  # the latest prompts win
            return
        prompts = self.prompts()
        if prompts["points"] is None and prompts["box"] is None:
            self._show_mask(layer_name, None)  # nothing to ask the model
            return
        key = self._image_key()
        if key is None:
            return
        self._busy[layer_name], self._dirty[layer_name] = True, False
        sent = time.perf_counter()

        def done(mask, layer_name=layer_name, model=model):
            self.latencies.append(time.perf_counter() - sent)
            try:
                self._show_mask(layer_name, mask)
            finally:  # never leave the layer busy: later prompts would wait forever
                self._next(layer_name, model)

        def failed(message, user, layer_name=layer_name, model=model):
            notify_failure(message, user)
            self._busy[layer_name] = False

        job = self.session.call(
            requests.Segment(model_request(model), key, **prompts),
            on_done=done,
            on_failed=failed,
        )
        job.wait(CLICK_WAIT_S)

    def _next(self, layer_name: str, model: str) -> None:
        self._busy[layer_name] = False
        if self._dirty.get(layer_name):
            self._request(layer_name, model)

    def _show_mask(self, layer_name: str, mask: np.ndarray | None) -> None:
        layer = find(self.viewer, layer_name)
        if layer is None:
            return
        show_mask(layer, mask)
        self.ious[layer_name] = None if mask is None else self._iou(mask)
        self._readout()

    def _iou(self, mask: np.ndarray) -> float | None:
        truth = self.truth.currentText()
        if truth == NONE or truth not in self.viewer.layers or not mask.any():
            return None
        labels = plane(self.viewer, self.viewer.layers[truth])
        if labels.shape != mask.shape:
            return None
        return matched_iou(mask, labels)[1]

    def _readout(self) -> None:
        parts = []
        for name, title in ((MASK, "model"), (BASE_MASK, "base model")):
            if name in self.viewer.layers and (
                name == MASK or self.compare.isChecked()
            ):
                area = int((np.asarray(self.viewer.layers[name].data) > 0).sum())
                iou = self.ious.get(name)
                parts.append(
                    f"{title}: {area:,} px"
                    + (" (nothing)" if area == 0 else "")
                    + ("" if iou is None else f", IoU {iou:.3f}")
                )
        self.readout.setText(" · ".join(parts))

    # -- objects -------------------------------------------------------------------------

    def commit(self) -> None:
        if MASK not in self.viewer.layers:
            return
        mask = np.asarray(self.viewer.layers[MASK].data) > 0
        if mask.any():
            committed = self.viewer.layers[COMMITTED]
            data = np.asarray(committed.data).copy()
            data[mask] = data.max() + 1
            committed.data = data
            started = self._first_click or time.perf_counter()
            seconds = time.perf_counter() - started
            self.effort.append({"clicks": self._clicks, "seconds": seconds})
            self._clicks, self._first_click = 0, None
            self._publish_effort()
        self.clear()

    def undo(self) -> None:
        """Take back the last committed object (and its effort)."""
        committed = find(self.viewer, COMMITTED)
        if committed is None or not self.effort:
            return
        data = np.asarray(committed.data).copy()
        data[data == data.max()] = 0
        committed.data = data
        self.effort.pop()
        self._publish_effort()

    def _publish_effort(self) -> None:
        self.undo_button.setEnabled(bool(self.effort))
        self.session.prompt.effort = tuple(dict(e) for e in self.effort)

    def clear(self) -> None:
        clear_prompts(self.viewer)

    def segment_everything(self) -> None:
        key = self._image_key()
        if key is None:
            self.session.info("Pick an image layer first.")
            return
        self.auto_readout.setText("Segmenting the whole image…")
        self.session.call(
            requests.Automatic(model_request(chosen(self.model)), key),
            on_done=self._show_automatic,
        )

    def _show_automatic(self, result: dict) -> None:
        name = f"automatic ({result['kind']})"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = result["labels"]
        else:
            self.viewer.add_labels(result["labels"], name=name, opacity=0.6)
        self.auto_readout.setText(automatic_summary(result))

    # -- the Annotate widget's handles -----------------------------------------------

    def current_plane(self, layer=None) -> np.ndarray | None:
        """The 2D plane shown of ``layer`` (default: the image being prompted)."""
        layer = layer or self.image.layer()
        return None if layer is None else plane(self.viewer, layer)

    def committed_labels(self) -> np.ndarray | None:
        """The committed objects of the current image (None before 'Start')."""
        layer = find(self.viewer, COMMITTED)
        return None if layer is None else np.asarray(layer.data)

    def new_image(self, layer_name: str, model: str | None = None) -> None:
        """Prompt on ``layer_name`` from scratch (no objects, no effort yet), with
        ``model`` (a run folder or base model) if given, its embedding started."""
        if model is not None and Path(model).is_absolute():
            self.load_run(model)
        elif model is not None:
            self.model.setCurrentText(model)
        self.image.refresh()
        self.image.setCurrentText(layer_name)
        for name in (COMMITTED, MASK, BASE_MASK):
            if name in self.viewer.layers:  # resized to the new image by start()
                self.viewer.layers.remove(name)
        self.clear()
        self.effort, self._clicks, self._first_click = [], 0, None
        self._publish_effort()
        self.start()
        key = self._image_key()
        if key is not None:
            self.session.call(requests.Prepare(model_request(chosen(self.model)), key))
