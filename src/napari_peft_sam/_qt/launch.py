"""``napari-peft-sam gui``: napari with every widget docked and sample data open."""

from __future__ import annotations

import os
import time

from ._session import HOME_ENV, PLUGIN

# (display name, widget, tab group, tab title): the widgets of a group are
# tabbed in this order, the numbers giving the steps' order. Two groups side
# by side on the right (napari's layer list keeps the left), Results and Jobs
# the full width at the bottom: the window fits a 1920x1080 screen.
DOCKS = (
    ("Data", "data_widget:DataWidget", "setup", "1 Data"),
    ("Model and method", "model_widget:ModelWidget", "setup", "2 Model"),
    ("Train", "train_widget:TrainWidget", "setup", "3 Train"),
    ("Annotate", "annotate_widget:AnnotateWidget", "setup", "5 Annotate"),
    ("Prompt tester", "prompt_widget:PromptWidget", "try", "4 Try: Prompt tester"),
    ("Sweep", "sweep_widget:SweepWidget", "try", "6 Sweep"),
    ("Results", "results_widget:ResultsWidget", "results", "Results"),
    ("Jobs", "jobs_widget:JobsWidget", "jobs", "Jobs"),
)
AREAS = {"setup": "right", "try": "right", "results": "bottom", "jobs": "bottom"}
RAISED = ("Data", "Prompt tester")  # what a new user starts with


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
    """Dock every widget of the plugin; returns them by display name.

    Each dock carries the name napari gives the plugin's own docks, so the
    Plugins menu raises it instead of docking a second copy. Results and Jobs
    take the full width at the bottom; Data and the prompt tester are raised.
    """
    from importlib import import_module

    from napari.plugins import menu_item_template
    from qtpy.QtCore import Qt

    window = viewer.window._qt_window
    window.setCorner(Qt.BottomLeftCorner, Qt.BottomDockWidgetArea)
    window.setCorner(Qt.BottomRightCorner, Qt.BottomDockWidgetArea)
    widgets, docks, first = {}, {}, {}
    for name, target, group, title in DOCKS:
        module, cls = target.split(":")
        widget = getattr(import_module(f"napari_peft_sam._qt.{module}"), cls)(viewer)
        dock = viewer.window.add_dock_widget(
            widget,
            name=menu_item_template.format(PLUGIN, name),
            area=AREAS[group],
            add_vertical_stretch=False,
        )
        dock.setWindowTitle(title)
        if group in first:
            window.tabifyDockWidget(first[group], dock)
        elif first and AREAS[group] == "right" and "setup" in first:
            window.splitDockWidget(first["setup"], dock, Qt.Horizontal)
        first.setdefault(group, dock)
        widgets[name], docks[name] = widget, dock
    for name in RAISED:
        docks[name].raise_()
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
