"""``napari-peft-sam gui``: napari with every widget docked and sample data open."""

from __future__ import annotations

import os
import time

from ._session import HOME_ENV, PLUGIN

# (display name, widget, dock area); widgets sharing an area are tabbed
DOCKS = (
    ("Data", "data_widget:DataWidget", "right"),
    ("Model and method", "model_widget:ModelWidget", "right"),
    ("Train", "train_widget:TrainWidget", "right"),
    ("Annotate", "annotate_widget:AnnotateWidget", "right"),
    ("Prompt tester", "prompt_widget:PromptWidget", "left"),
    ("Sweep", "sweep_widget:SweepWidget", "left"),
    ("Results", "results_widget:ResultsWidget", "bottom"),
)


def wait_for(condition, timeout_s: float, poll_s: float = 0.01) -> bool:
    """Run Qt's events until ``condition()`` holds or ``timeout_s`` passes.

    For scripts that drive the widgets (the docs' screenshots, the GUI
    benchmark); tests use qtbot instead. Returns whether the condition holds.
    """
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and not condition():
        app.processEvents()
        time.sleep(poll_s)
    return bool(condition())


def dock_all(viewer) -> dict:
    """Dock every widget of the plugin; returns them by display name."""
    from importlib import import_module

    widgets, used = {}, set()
    for name, target, area in DOCKS:
        module, cls = target.split(":")
        widget = getattr(import_module(f"napari_peft_sam._qt.{module}"), cls)(viewer)
        viewer.window.add_dock_widget(
            widget,
            name=name,
            area=area,
            tabify=area in used,
            add_vertical_stretch=False,
        )
        used.add(area)
        widgets[name] = widget
    return widgets


def launch(home: str | None = None, sample: str | None = "organoids", run: bool = True):
    """Open the viewer; returns it (and its widgets) when ``run`` is False."""
    if home:
        os.environ[HOME_ENV] = str(home)
    import napari

    viewer = napari.Viewer(title="napari-peft-sam")
    if sample:
        viewer.open_sample(PLUGIN, sample)
    widgets = dock_all(viewer)
    if sample:
        data = widgets["Data"]
        data.source.setCurrentText("napari layers")
        data.stack.setChecked(True)
    if run:
        napari.run()
    return viewer, widgets
