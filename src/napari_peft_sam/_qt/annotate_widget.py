"""Annotate: the prompt tester's objects into a set, Retrain, Next image.

'Add to set' grows an add-only, versioned annotation set (``core.annotations``);
'Retrain' continues from the prompt tester's model on it, as a job of the
session's job manager (progress and Stop, also in the Jobs list); 'Next image'
opens the next file or plane with the newest model. Clicks and seconds per
object go into the set and, with each round's run, into the results store.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Labels
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core import requests
from ..core.annotations import HELD_OUT_EVERY, AnnotationSet, list_sets
from ..core.catalog import PRIMARY
from ..core.display import duration, recipe_line
from ..core.errors import UserError
from ._annotate_text import NEW_SET, effort_line, set_summary
from ._image_steps import ImageSteps
from ._session import notify_failure, session_for
from .prompt_widget import COMMITTED, NONE, PromptWidget

NOTE = (
    "Partly annotated images are fine for training with points and boxes (only "
    "the annotated objects are prompted); the AIS decoder (with decoder) needs "
    "every object of an image annotated."
)


class AnnotateWidget(QWidget):
    """Add to set, Retrain, Next image, and the effort so far."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.run = None  # the RunController of the last retrain
        self.last_result: dict[str, Any] | None = None
        self.steps = ImageSteps(napari_viewer)

        self.set_name = QComboBox()
        self.set_name.setEditable(True)
        self.set_name.addItems(list_sets(self.session.home) or ["my-images"])
        self.held_out_every = QSpinBox()
        self.held_out_every.setRange(2, 50)
        self.held_out_every.setValue(HELD_OUT_EVERY)
        self.held_out_every.setToolTip(
            "A new set holds out every k-th image added (for its held-out mSA); "
            "decided when the image is added, never changed."
        )
        self.extra = QComboBox()
        self.complete = QCheckBox("every object on this image is annotated")
        self.summary = QLabel()
        self.add_button = QPushButton("Add to set")
        self.retrain_button = QPushButton("Retrain")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.folder_button = QPushButton("Image folder…")
        self.next_button = QPushButton("Next image")
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m steps")
        self.status = QLabel("Commit objects in the prompt tester, then 'Add to set'.")
        self.effort = QLabel()
        note = QLabel(NOTE)
        for label in (self.summary, self.status, self.effort, note):
            label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("annotation set", self.set_name)
        form.addRow("hold out every", self.held_out_every)
        form.addRow("also add labels", self.extra)
        form.addRow("", self.complete)
        train, step = QHBoxLayout(), QHBoxLayout()
        for row, buttons in (
            (train, (self.retrain_button, self.stop_button)),
            (step, (self.folder_button, self.next_button)),
        ):
            for button in buttons:
                row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for part in (self.summary, self.add_button, train, self.progress, self.status):
            (layout.addLayout if isinstance(part, QHBoxLayout) else layout.addWidget)(
                part
            )
        for part in (step, self.effort, note):
            (layout.addLayout if isinstance(part, QHBoxLayout) else layout.addWidget)(
                part
            )
        layout.addStretch()

        self.add_button.clicked.connect(self.add)
        self.retrain_button.clicked.connect(self.retrain)
        self.stop_button.clicked.connect(self.stop)
        self.folder_button.clicked.connect(lambda: self.choose_folder())
        self.next_button.clicked.connect(self.next_image)
        self.set_name.currentTextChanged.connect(lambda *_: self.show_set())
        for event in (
            napari_viewer.layers.events.inserted,
            napari_viewer.layers.events.removed,
        ):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self._rounds = ""  # the set's effort per round, read when the set changes
        # the prompt session says when an object is committed or taken back
        effort = self.session.prompt.events.effort
        effort.connect(self.show_effort)
        self.destroyed.connect(lambda *_, f=self.show_effort: effort.disconnect(f))
        self.show_set()

    # -- helpers ---------------------------------------------------------------------

    def prompter(self) -> PromptWidget:
        """The prompt tester of this viewer (docked now if it is not)."""
        return self.session.dock("Prompt tester", show=False)

    def aset(self) -> AnnotationSet | None:
        """The chosen set; None while there is none; a damaged set raises UserError."""
        return AnnotationSet.find(
            self.session.home, self.set_name.currentText().strip()
        )

    def _refresh_layers(self, *_) -> None:
        current = self.extra.currentText()
        ours = {COMMITTED, "mask (model)", "mask (base model)"}
        names = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and layer.name not in ours
        ]
        self.extra.clear()
        self.extra.addItems([NONE, *names])
        self.extra.setCurrentText(current if current in names else NONE)

    def show_set(self) -> None:
        """Summarise the chosen set; a damaged one is said, in a notification too."""
        self._rounds = ""
        try:
            aset = self.aset()
        except UserError as error:
            self.held_out_every.setEnabled(False)
            self.summary.setText(str(error))
            notify_failure(str(error), True)
            return
        self.held_out_every.setEnabled(aset is None)  # fixed once the set exists
        if aset is None:
            self.summary.setText(NEW_SET)
            return
        self.held_out_every.setValue(aset.manifest["held_out_every"])
        summary, self._rounds = set_summary(aset)
        self.summary.setText(summary)
        self.show_effort()

    def show_effort(self, *_) -> None:
        self.effort.setText(effort_line(self.session.prompt.effort) + self._rounds)

    # -- add -------------------------------------------------------------------------

    def item(self) -> dict[str, Any]:
        """The current image, its committed objects (over any chosen labels) and effort."""
        prompt = self.prompter()
        plane, labels = prompt.current_plane(), prompt.committed_labels()
        if plane is None or labels is None:
            raise UserError("Start prompting on an image and commit objects first.")
        labels = labels.astype(np.int32)
        if self.extra.currentText() != NONE:
            extra = prompt.current_plane(self.viewer.layers[self.extra.currentText()])
            if extra.shape != labels.shape:
                raise UserError(
                    f"Labels layer {self.extra.currentText()!r} {extra.shape} does not "
                    f"match the image {labels.shape}."
                )
            merged = extra.astype(np.int32)
            merged[labels > 0] = labels[labels > 0] + merged.max()
            labels = merged
        image = prompt.image.layer()
        name = image.metadata.get("path", image.name)
        if image.ndim > 2:  # a plane of a stack
            name += f"[{self.viewer.dims.current_step[0]}]"
        return {
            "image": np.asarray(plane),
            "labels": labels,
            "name": Path(name).name,
            "complete": self.complete.isChecked(),
            "effort": list(self.session.prompt.effort),
            "model": self.session.prompt.model,
            "source": name,
        }

    def add(self) -> None:
        try:
            item = self.item()
        except UserError as error:
            notify_failure(str(error), True)
            return
        self.status.setText("Adding to the set…")
        self.session.call(
            requests.AddToSet(
                str(self.session.home),
                self.set_name.currentText().strip(),
                [item],
                self.held_out_every.value(),
            ),
            on_done=self._added,
            on_failed=self._failed,
        )

    def _added(self, summary: dict) -> None:
        version = summary["added"]
        self.status.setText(
            f"Added as v{version['version']:04d} ({version['train']} training, "
            f"{version['held_out']} held-out images). 'Retrain' when you like, or "
            "'Next image'."
        )
        self.show_set()
        self.session.results_changed.emit()  # the effort curve

    def _failed(self, message: str, user_error: bool) -> None:
        self.status.setText(message.splitlines()[0])
        notify_failure(message, user_error)

    # -- retrain ---------------------------------------------------------------------

    def request(self) -> requests.Retrain:
        """Continue from the prompt tester's model: its run's adapter, or the base model."""
        aset = self.aset()
        if aset is None or aset.version == 0:
            raise UserError("Add annotated images to the set before retraining.")
        self.prompter()  # docked if it is not: the model choice is its own
        current = self.session.prompt.model
        choices = self.session.choices
        init_from = current if Path(current).is_absolute() else None
        model = (
            dict(choices.model)
            if choices.model["name"] == current
            else {"name": current}
        )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run = f"{stamp}-annotate-{aset.name}-round{aset.round + 1}"
        return requests.Retrain(
            home=str(self.session.home),
            name=aset.name,
            run_dir=str(self.session.runs_dir / run),
            model=None if init_from else model,
            method=dict(choices.method),
            init_from=init_from,
            train=dict(choices.train),
            storage=self.session.storage,
        )

    def settings_source(self) -> str:
        """Where the retrain's settings come from, in words."""
        return "settings: " + recipe_line(self.session.choices.train, "the Train tab's")

    @property
    def running(self) -> bool:
        return self.run is not None and self.run.running

    @property
    def process(self):
        return None if self.run is None else self.run.process

    def retrain(self) -> None:
        if self.running:
            return
        try:
            request = self.request()
        except UserError as error:
            notify_failure(str(error), True)
            return
        run = self.session.jobs.start(f"Retrain {request.name}", request)
        if run is None:  # another training-type job runs: the manager said so
            return
        self.run, self.last_result = run, None
        self.progress.setRange(0, 0)
        start = (
            Path(request.init_from).name if request.init_from else request.model["name"]
        )
        self.status.setText(
            f"Retraining from {start} on {request.name} ({self.settings_source()})…"
        )
        run.event.connect(self._on_event)
        run.done.connect(self._on_done)
        run.failed.connect(self._on_failed)
        self.retrain_button.setEnabled(False)
        self.stop_button.setEnabled(True)

    def stop(self) -> None:
        if self.running:
            self.run.stop()
            self.status.setText("Stopping after this step…")

    def _on_event(self, event) -> None:
        kind = getattr(event, "kind", None)
        if kind == "step":
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.step)
            self.status.setText(
                f"Retraining: step {event.step}/{event.total} · loss "
                f"{event.loss:.4f} · {duration(event.eta_s)} left "
                f"({self.settings_source()})"
            )
        elif kind == "progress" and event.done:
            self.status.setText(
                f"Evaluating the held-out images: {event.done}/{event.total}"
            )

    def _finish(self) -> None:
        self.retrain_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    def _on_done(self, result: dict) -> None:
        self._finish()
        self.last_result = result
        if result["status"] == "stopped":
            self.status.setText("Retraining stopped; the model stays as it was.")
            return
        self.session.add_run(result["run_dir"])
        metric = result["metrics"].get(PRIMARY)
        held = "no held-out image yet"
        if metric is not None:
            held = f"held-out {PRIMARY} {metric:.3f}"
        self.status.setText(
            f"Round {result['annotation']['round']} model ready ({held}); it opens "
            "with the next image."
        )
        self.show_set()
        self.session.results_changed.emit()

    def _on_failed(self, message: str, user_error: bool) -> None:
        self._finish()
        self._failed(message, user_error)

    # -- next image ------------------------------------------------------------------

    def choose_folder(self, folder: str | None = None) -> None:
        """The folder of images 'Next image' steps through."""
        folder = folder or QFileDialog.getExistingDirectory(self, "Images to annotate")
        if not folder:
            return
        try:
            n = self.steps.set_folder(folder)
        except UserError as error:
            notify_failure(str(error), True)
            return
        self.status.setText(f"{n} images in {folder}; 'Next image' opens one.")

    def newest_model(self) -> str | None:
        """The set's newest retrain (kept on this machine), else None."""
        aset = self.aset()
        run = aset.summary()["last_run"] if aset is not None else None
        return run if run and Path(run).exists() else None

    def next_image(self) -> None:
        try:
            aset = self.aset()
        except UserError as error:
            notify_failure(str(error), True)
            return
        known = {e["image_sha256"] for e in aset.manifest["images"]} if aset else set()
        prompt = self.prompter()
        opened, message = self.steps.next(prompt.image.layer(), known)
        if opened is None:
            self.session.info(message)
            return
        model = self.newest_model()
        prompt.new_image(opened, model)
        name = Path(model).name if model else self.session.prompt.model
        self.status.setText(f"{message}, with {name} in the prompt tester.")
