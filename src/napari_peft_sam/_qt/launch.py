"""``napari-peft-sam gui``: napari with every widget docked and sample data open."""

from __future__ import annotations

import os
import time

from ._layout import PLUGIN
from ._session import HOME_ENV


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

    Each dock carries the name the Plugins menu gives the plugin's docks, so
    its entry shows or hides the dock instead of docking a second copy. The
    docks are arranged as :mod:`._layout` says (Data and the prompt tester
    raised) and kept so when one is opened again.
    """
    from ._layout import DOCKS, RAISED, arrange, keep_layout, open_dock

    keep_layout(viewer)
    docks, widgets = {}, {}
    for name, *_ in DOCKS:
        docks[name], widgets[name] = open_dock(viewer, name)
    arrange(viewer.window._qt_window, raise_=tuple(docks[name] for name in RAISED))
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
        viewer.window._qt_window.showMaximized()  # the layout is made for a full screen
        napari.run()
    return viewer, widgets
