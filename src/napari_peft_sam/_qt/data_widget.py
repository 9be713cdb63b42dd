"""Data: napari layers, folders, the sample data or a benchmark dataset."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ..core import requests
from ..core.errors import UserError
from ._session import notify_failure, session_for

SOURCES = ("napari layers", "folders", "sample data", "benchmark dataset")


@dataclass(frozen=True)
class DataChoice:
    """What the Data widget's user picked (no arrays: layers are named)."""

    kind: str  # one of SOURCES
    image_layer: str = ""
    labels_layer: str = ""
    images: str = ""
    labels: str = ""
    name: str = ""
    stack: bool = False
    val_fraction: float = 0.2


def layer_arrays(viewer, choice: DataChoice) -> tuple[np.ndarray, np.ndarray, str]:
    names = (choice.image_layer, choice.labels_layer)
    if not all(names) or any(n not in viewer.layers for n in names):
        raise UserError("Pick an image layer and a labels layer (or another source).")
    image, labels = (viewer.layers[n] for n in names)
    if getattr(image, "multiscale", False) or getattr(labels, "multiscale", False):
        raise UserError("Multiscale layers are not supported; use a single-scale copy.")
    return (
        np.asarray(image.data),
        np.asarray(labels.data),
        f"{image.name} + {labels.name}",
    )


def source_request(viewer, choice: DataChoice | None) -> dict[str, Any]:
    """The service's description of the chosen data (layer arrays travel with it)."""
    if choice is None:
        raise UserError("Pick the training data in the Data widget first.")
    if choice.kind == "napari layers":
        image, labels, name = layer_arrays(viewer, choice)
        return {
            "kind": "arrays",
            "images": [image],
            "labels": [labels],
            "names": [name],
            "stack": choice.stack,
            "source": f"napari layers {name}",
        }
    if choice.kind == "folders":
        if not choice.images or not choice.labels:
            raise UserError("Give a folder (or glob) of images and one of labels.")
        return {
            "kind": "files",
            "images": choice.images,
            "labels": choice.labels,
            "stack": choice.stack,
        }
    return {"kind": "named", "name": choice.name}


def data_spec(choice: DataChoice) -> dict[str, Any]:
    """DataSpec fields; layer arrays are written into the run folder by the service."""
    spec = {"val_fraction": choice.val_fraction, "split_seed": 0}
    if choice.kind in ("sample data", "benchmark dataset"):
        return spec | {"dataset": choice.name}
    if choice.kind == "folders":
        return spec | {
            "images": [choice.images],
            "labels": [choice.labels],
            "stack": choice.stack,
        }
    return spec | {"stack": choice.stack}


def check_arrays(request: dict[str, Any], val_fraction: float) -> dict[str, Any]:
    """Images, objects and the split of layer arrays (numpy only: instant)."""
    from ..core.sources import from_request

    return from_request(request).summary(val_fraction)


def sweep_data(viewer, home: Path, choice: DataChoice) -> tuple[str, dict | None]:
    """A name for the sweep table and DataSpec fields of files on disk (layers
    are written once under ``home/data/<hash>``)."""
    request = source_request(viewer, choice)
    if request["kind"] == "named":
        return request["name"], None
    if request["kind"] == "files":
        return Path(request["images"]).name, data_spec(choice)
    from ..core.sources import write_pairs

    digest = hashlib.sha1()
    for array in (*request["images"], *request["labels"]):
        digest.update(np.ascontiguousarray(array).tobytes())
    folder = home / "data" / digest.hexdigest()[:12]
    write_pairs(request["images"], request["labels"], folder)
    spec = data_spec(choice) | {
        "images": [str(folder / "images")],
        "labels": [str(folder / "labels")],
    }
    return request["source"], spec


class LayerCombo(QComboBox):
    """The names of the viewer's layers of one type, kept up to date."""

    def __init__(self, viewer, layer_type) -> None:
        super().__init__()
        self.viewer, self.layer_type = viewer, layer_type
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh)
        self.refresh()

    def refresh(self, *_) -> None:
        current = self.currentText()
        names = [
            lyr.name for lyr in self.viewer.layers if isinstance(lyr, self.layer_type)
        ]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentTextChanged.emit(self.currentText())

    def layer(self):
        name = self.currentText()
        if not name or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]


def _path_row(placeholder: str) -> tuple[QWidget, QLineEdit]:
    row, edit = QWidget(), QLineEdit()
    edit.setPlaceholderText(placeholder)
    browse = QPushButton("Browse…")
    browse.clicked.connect(
        lambda: edit.setText(QFileDialog.getExistingDirectory(row) or edit.text())
    )
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit)
    layout.addWidget(browse)
    return row, edit


class DataWidget(QWidget):
    """Picks the training data and says what was found (images, objects, split)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.summary: dict[str, Any] | None = None

        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.pages = QStackedWidget()
        self.image_layer = LayerCombo(napari_viewer, Image)
        self.labels_layer = LayerCombo(napari_viewer, Labels)
        self.stack = QCheckBox("stack of 2D planes")
        self.stack.setToolTip("Treat 3D layers as stacks of independent 2D images.")
        layers = QWidget()
        form = QFormLayout(layers)
        form.addRow("image layer", self.image_layer)
        form.addRow("labels layer", self.labels_layer)
        form.addRow("", self.stack)
        folders = QWidget()
        form = QFormLayout(folders)
        images_row, self.images_path = _path_row("folder or glob of images")
        labels_row, self.labels_path = _path_row("folder or glob of label images")
        form.addRow("images", images_row)
        form.addRow("labels", labels_row)
        self.sample = QComboBox()
        self.sample.addItems(["nuclei", "organoids"])
        self.benchmark = QComboBox()
        self.session.when_ready(
            lambda c: (
                self.benchmark.addItems(c["benchmarks"])
                if not self.benchmark.count()
                else None
            )
        )
        self.pages.addWidget(layers)
        self.pages.addWidget(folders)
        for page, widget in ((QWidget(), self.sample), (QWidget(), self.benchmark)):
            QFormLayout(page).addRow("name", widget)
            self.pages.addWidget(page)
        self.pages.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Maximum)
        self.val_fraction = QDoubleSpinBox()
        self.val_fraction.setRange(0.05, 0.9)
        self.val_fraction.setSingleStep(0.05)
        self.val_fraction.setValue(0.2)
        self.val_fraction.setToolTip("Share of the images held out for validation.")
        self.check = QPushButton("Check data")
        self.result = QLabel("No data checked yet.")
        self.result.setWordWrap(True)

        top = QFormLayout()
        top.addRow("source", self.source)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.pages)
        bottom = QFormLayout()
        bottom.addRow("validation share", self.val_fraction)
        layout.addLayout(bottom)
        layout.addWidget(self.check)
        layout.addWidget(self.result)
        layout.addStretch()

        self.source.currentIndexChanged.connect(self.pages.setCurrentIndex)
        self.check.clicked.connect(self.run_check)
        self.image_layer.currentTextChanged.connect(self._guess_stack)
        self._guess_stack()
        if not any(isinstance(lyr, Image) for lyr in napari_viewer.layers):
            self.source.setCurrentText("sample data")
        self.pages.setCurrentIndex(self.source.currentIndex())
        for signal in (
            self.source.currentIndexChanged,
            self.image_layer.currentTextChanged,
            self.labels_layer.currentTextChanged,
            self.sample.currentTextChanged,
            self.benchmark.currentTextChanged,
            self.images_path.textChanged,
            self.labels_path.textChanged,
            self.stack.toggled,
            self.val_fraction.valueChanged,
        ):
            signal.connect(self._publish)
        self._publish()

    def _guess_stack(self, *_) -> None:
        layer = self.image_layer.layer()
        if layer is not None:
            self.stack.setChecked(layer.ndim - (1 if layer.rgb else 0) > 2)

    def choice(self) -> DataChoice:
        """What the form says now."""
        kind = self.source.currentText()
        name = self.sample.currentText() if kind == "sample data" else ""
        if kind == "benchmark dataset":
            name = self.benchmark.currentText()
        return DataChoice(
            kind=kind,
            image_layer=self.image_layer.currentText(),
            labels_layer=self.labels_layer.currentText(),
            images=self.images_path.text().strip(),
            labels=self.labels_path.text().strip(),
            name=name,
            stack=self.stack.isChecked(),
            val_fraction=self.val_fraction.value(),
        )

    def _publish(self, *_) -> None:
        self.summary = None
        self.result.setText("Not checked yet: press 'Check data'.")
        self.session.choices.data = self.choice()

    # -- checking --------------------------------------------------------------------

    def run_check(self) -> None:
        """Count images and objects; a problem becomes one notification."""
        choice = self.choice()
        try:
            request = source_request(self.viewer, choice)
            if request["kind"] == "arrays":
                self._show(check_arrays(request, choice.val_fraction))
                return
        except UserError as error:
            self._problem(str(error))
            return
        self.result.setText("Checking…")
        self.session.call(
            requests.InspectData(request, choice.val_fraction),
            on_done=self._show,
            on_failed=lambda m, user: (
                self._problem(m) if user else notify_failure(m, user)
            ),
        )

    def _show(self, summary: dict[str, Any]) -> None:
        self.summary = summary
        self.result.setText(
            f"{summary['images']} images, {summary['objects']} objects: "
            f"{summary['train']} for training, {summary['val']} for validation."
        )

    def _problem(self, message: str) -> None:
        self.summary = None
        self.result.setText(f"Problem: {message}")
        notify_failure(message, True)
