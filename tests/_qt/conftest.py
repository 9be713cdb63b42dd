"""A napari viewer with every widget docked, on its own results folder."""

from __future__ import annotations

import time

import pytest


def wait_until(qtbot, condition, timeout_s: float = 120.0) -> None:
    # a callback returning None would count as "done" for pytest-qt
    qtbot.waitUntil(lambda: bool(condition()), timeout=int(timeout_s * 1000))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_PEFT_SAM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def docked(make_napari_viewer, qtbot, home):
    """(viewer, widgets by display name), the model catalog already loaded."""
    from napari_peft_sam._qt.launch import dock_all

    viewer = make_napari_viewer()
    widgets = dock_all(viewer)
    session = widgets["Data"].session
    wait_until(qtbot, lambda: session.catalog is not None, 120)
    yield viewer, widgets
    for job in session.jobs.jobs:  # every child process, whichever dock started it
        job.kill()
    session.close()
    time.sleep(0.1)


def notifications():
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]
