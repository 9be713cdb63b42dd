"""Issue 28: on a 1920x1080 screen every dock is visible at a usable size, at
the start, after the Plugins menu and after a dock was closed and opened
again; the Jobs list shows a job's name, progress and Stop."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QRect, Qt
from qtpy.QtWidgets import QTabBar

from napari_peft_sam._qt._layout import DOCKS, plugin_docks

from .conftest import wait_until
from .test_widgets import choose, use_sample

pytestmark = pytest.mark.qt
SCREEN = (1920, 1040)  # a 1080p screen less a taskbar
SETUP = ["1 Data", "2 Model", "3 Train", "5 Annotate"]
TRY = ["4 Try: Prompt tester", "6 Sweep"]
JOBS_READABLE = 400  # a job's name over its state, the progress bar and Stop


def shown(viewer, qtbot):
    window = viewer.window._qt_window
    window.show()
    qtbot.waitExposed(window)
    window.resize(*SCREEN)
    qtbot.wait(100)
    return window


def menu_actions(window) -> dict:
    """Plugins > PEFT-SAM's entries by their text."""
    plugins = next(
        a.menu() for a in window.menuBar().actions() if "Plugins" in a.text()
    )
    ours = next(a.menu() for a in plugins.actions() if a.text() == "PEFT-SAM")
    return {action.text(): action for action in ours.actions()}


def tab_groups(window) -> dict:
    """The window's dock tab bars: their titles -> the raised one."""
    return {
        tuple(bar.tabText(i) for i in range(bar.count())): bar.tabText(
            bar.currentIndex()
        )
        for bar in window.findChildren(QTabBar)
        if bar.parent() is window and bar.count() and bar.isVisible()
    }


def assert_fits(window, raised=None):
    """The window fits the screen, the groups are in the steps' order (with
    ``raised`` in front when given), every raised dock is on screen at its
    usable size; Results and Jobs share the bottom's full width."""
    hint = window.minimumSizeHint()
    assert hint.width() <= SCREEN[0] and hint.height() <= SCREEN[1], hint
    assert (window.width(), window.height()) == SCREEN
    groups = tab_groups(window)
    assert sorted(groups) == [tuple(SETUP), tuple(TRY)]
    raised = raised or (groups[tuple(SETUP)], groups[tuple(TRY)])
    assert (groups[tuple(SETUP)], groups[tuple(TRY)]) == raised
    docks = {d.windowTitle(): d for d in plugin_docks(window)}
    assert sorted(docks) == sorted([*SETUP, *TRY, "Results", "Jobs"])
    inside = QRect(0, 0, *SCREEN)
    for title in (*raised, "Results", "Jobs"):
        dock, need = docks[title], docks[title].minimumSizeHint()
        assert inside.contains(dock.geometry()), title
        assert not dock.visibleRegion().isEmpty(), f"{title} is hidden"
        assert dock.width() >= need.width() and dock.height() >= need.height(), title
    results, jobs = docks["Results"].geometry(), docks["Jobs"].geometry()
    assert results.left() == 0 and jobs.right() == SCREEN[0] - 1
    assert results.top() > docks[raised[0]].geometry().bottom()
    assert jobs.width() >= JOBS_READABLE, jobs.width()


def test_every_dock_fits_a_1080p_screen_from_start_and_menu(docked, qtbot):
    viewer, widgets = docked
    use_sample(viewer, widgets, "organoids")
    window = shown(viewer, qtbot)
    assert_fits(window, ("1 Data", "4 Try: Prompt tester"))
    layers = viewer.window._qt_viewer.layers
    assert layers.height() > 3 * layers.sizeHintForRow(0)  # more than 2 rows
    # Plugins > PEFT-SAM's entries hide and show the docked widgets (napari's
    # toggle): no second copy, nothing grows
    actions = menu_actions(window)
    assert sorted(actions) == sorted(name for name, *_ in DOCKS)
    docked_now = dict(viewer.window._wrapped_dock_widgets)
    for name, *_ in DOCKS:
        actions[name].trigger()  # what a click on the entry does
        qtbot.wait(50)
        dock = docked_now[next(n for n in docked_now if n.startswith(name + " ("))]
        assert dock.isHidden(), name
        actions[name].trigger()
        qtbot.wait(50)
        assert not dock.isHidden(), name
    assert dict(viewer.window._wrapped_dock_widgets) == docked_now
    assert_fits(window)
    # a dock closed with its close button and opened again from the menu goes
    # back to its group (napari would stack it under the others)
    for name, title in (("Train", "3 Train"), ("Prompt tester", TRY[0])):
        dock = next(d for d in plugin_docks(window) if d.windowTitle() == title)
        qtbot.mouseClick(dock.title.close_button, Qt.LeftButton)
        wait_until(qtbot, lambda: len(plugin_docks(window)) == len(DOCKS) - 1, 10)
        actions[name].trigger()
        wait_until(qtbot, lambda: len(plugin_docks(window)) == len(DOCKS), 10)
        qtbot.wait(100)
        available = window.screen().availableSize()
        assert window.height() <= max(SCREEN[1], available.height())  # not grown
        window.resize(*SCREEN)
        qtbot.wait(100)
    assert_fits(window, ("3 Train", TRY[0]))


def test_jobs_list_shows_name_progress_and_stop(docked, qtbot):
    viewer, widgets = docked
    use_sample(viewer, widgets)
    choose(widgets, iterations=3)
    window = shown(viewer, qtbot)
    train = widgets["Train"]
    qtbot.mouseClick(train.train_button, Qt.LeftButton)
    jobs = widgets["Jobs"]
    wait_until(qtbot, lambda: jobs.rows and not jobs.rows[0][0].running, 300)
    qtbot.wait(100)
    assert_fits(window, ("1 Data", "4 Try: Prompt tester"))
    job, bar, stop = jobs.rows[0]
    table = jobs.table
    cell = table.visualItemRect(table.item(0, 0))  # the name over the state
    assert cell.width() >= table.fontMetrics().horizontalAdvance(job.title)
    assert cell.height() >= 2 * table.fontMetrics().height()
    assert table.item(0, 0).text() == f"{job.title}\ndone"
    for widget in (bar, stop):
        assert table.viewport().rect().contains(widget.geometry()), widget
        assert widget.width() >= widget.minimumSizeHint().width()
    assert bar.value() == bar.maximum() == 3 and job.state == "finished"
