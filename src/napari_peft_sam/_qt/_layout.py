"""Where the plugin's docks go, so that the window fits a 1920x1080 screen.

Two tab groups side by side on the right (napari's layer list keeps the
left): the steps 1 Data -> 2 Model -> 3 Train (and 5 Annotate), and 4 Try
(the prompt tester) with 6 Sweep; Results and Jobs share the full width at
the bottom. napari stacks every dock it adds under the others in its area,
which grew the window past the screen (1931 px, 2780 px after the Plugins
menu); :func:`keep_layout` puts each of the plugin's docks back in its group
whenever one is added, from ``napari-peft-sam gui``, the Plugins menu or a job
opening the Jobs list.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QStyle

PLUGIN = "napari-peft-sam"

# (display name, widget, tab group, tab title): the widgets of a group are
# tabbed in this order, the numbers giving the steps' order
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
AREAS = {
    "setup": Qt.RightDockWidgetArea,
    "try": Qt.RightDockWidgetArea,
    "results": Qt.BottomDockWidgetArea,
    "jobs": Qt.BottomDockWidgetArea,
}
SIDE_BY_SIDE = (("setup", "try"), ("results", "jobs"))
RAISED = ("Data", "Prompt tester")  # what a new user starts with
# widths the docks get where there is room: the Train tab's form and curves
# side by side, the prompt tester's rows, a job's name, progress bar and Stop
WIDTHS = {"setup": 640, "try": 420, "jobs": 560}
CANVAS_MIN = 560  # what the canvas keeps of a 1920 px window


def dock_names(name: str) -> tuple[str, str]:
    """The names napari gives the plugin's dock ``name``: from the Plugins menu
    (the manifest's display name, which this plugin uses) and from
    ``add_plugin_dock_widget`` (the package's name)."""
    from napari.plugins import menu_item_template
    from npe2 import PluginManager

    shown = PluginManager.instance().get_manifest(PLUGIN).display_name
    return menu_item_template.format(shown, name), menu_item_template.format(
        PLUGIN, name
    )


def open_dock(viewer, name: str):
    """(dock, widget) of the plugin's widget ``name`` in ``viewer``, docked now
    if it is not open, under the name the Plugins menu looks for: its entry
    then shows or hides this dock instead of docking a second copy."""
    from importlib import import_module

    docked = viewer.window._wrapped_dock_widgets
    for full in dock_names(name):
        if full in docked:
            return docked[full], docked[full].inner_widget()
    module, cls = next(target for n, target, *_ in DOCKS if n == name).split(":")
    widget = getattr(import_module(f"napari_peft_sam._qt.{module}"), cls)(viewer)
    dock = viewer.window.add_dock_widget(
        widget, name=dock_names(name)[0], add_vertical_stretch=False
    )
    return dock, widget


def _place(dock) -> tuple[int, str] | None:
    """(position in DOCKS, group) of one of the plugin's docks, else None."""
    inner = dock.inner_widget() if hasattr(dock, "inner_widget") else dock.widget()
    if inner is None:
        return None
    kind = f"{type(inner).__module__.rsplit('.', 1)[-1]}:{type(inner).__name__}"
    for index, (_, target, group, _) in enumerate(DOCKS):
        if target == kind:
            return index, group
    return None


def plugin_docks(window) -> list:
    """The plugin's docks in the window, in DOCKS order: not those closed,
    hidden from the Window menu or floated by the user."""
    found = []
    for dock in window.findChildren(QDockWidget):
        hidden = dock.isHidden() and dock.testAttribute(Qt.WA_WState_ExplicitShowHide)
        place = _place(dock)
        if place is not None and not hidden and not dock.isFloating():
            found.append((place[0], dock))
    return [dock for _, dock in sorted(found, key=lambda pair: pair[0])]


def arrange(window, raise_: tuple = ()) -> None:
    """Dock the plugin's docks in their groups (see the module's text), with
    the docks in ``raise_`` and those raised before in front."""
    docks = plugin_docks(window)
    front = [d for d in docks if not d.visibleRegion().isEmpty()]
    first: dict = {}
    for dock in docks:
        index, group = _place(dock)
        dock.setWindowTitle(DOCKS[index][3])
        window.removeDockWidget(dock)
        window.addDockWidget(AREAS[group], dock)
        dock.show()
        first.setdefault(group, dock)
    # side by side first, tabs after: Qt's splitDockWidget takes a dock that
    # is already tabbed out of its group and leaves both off the window
    for left, right in SIDE_BY_SIDE:
        if left in first and right in first:
            window.splitDockWidget(first[left], first[right], Qt.Horizontal)
    for dock in docks:
        group = _place(dock)[1]
        if dock is not first[group]:
            window.tabifyDockWidget(first[group], dock)
    for dock in (*first.values(), *front, *raise_):
        dock.raise_()
    widen(window)
    keeper = window.findChild(_Keeper)
    if keeper is not None:
        keeper.known = docks


def widen(window) -> None:
    """Give the groups on the right and the Jobs list their WIDTHS where the
    canvas (down to CANVAS_MIN) or Results can spare them: Qt gives a
    window's new width to the canvas and shares it among the bottom docks, so
    the Train curves and the Jobs list stayed narrow."""
    front = {}
    for dock in plugin_docks(window):
        if not dock.visibleRegion().isEmpty():
            front.setdefault(_place(dock)[1], dock)
    if {"setup", "try"} <= front.keys():
        docks = [front["setup"], front["try"]]
        spare = window.centralWidget().width() - CANVAS_MIN
        sizes = []
        for dock in docks:
            grow = max(0, min(WIDTHS[_place(dock)[1]] - dock.width(), spare))
            sizes.append(dock.width() + grow)
            spare -= grow
        if sizes != [dock.width() for dock in docks]:
            window.resizeDocks(docks, sizes, Qt.Horizontal)
    if {"results", "jobs"} <= front.keys() and front["jobs"].width() < WIDTHS["jobs"]:
        results, jobs = front["results"], front["jobs"]
        separator = window.style().pixelMetric(QStyle.PM_DockWidgetSeparatorExtent)
        spare = window.width() - results.minimumSizeHint().width() - separator
        width = max(min(WIDTHS["jobs"], spare), jobs.minimumSizeHint().width())
        rest = window.width() - separator - width
        window.resizeDocks([results, jobs], [rest, width], Qt.Horizontal)


class _Keeper(QObject):
    """Arranges the docks again when one of the plugin's docks was added,
    widens the docks again when the window was resized."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.known = plugin_docks(window)  # the docks (not ids, which recur)
        # timers of this object: they die with the window, never fire after
        self.check_soon = self._timer(self.check)
        self.widen_soon = self._timer(lambda: widen(self.window))

    def _timer(self, slot) -> QTimer:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(0)
        timer.timeout.connect(slot)
        return timer

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.ChildAdded:
            self.check_soon.start()
        elif event.type() == QEvent.Resize:
            self.widen_soon.start()
        return False

    def check(self) -> None:
        docks = plugin_docks(self.window)
        new = [d for d in docks if not any(d is known for known in self.known)]
        self.known = docks
        if new:
            arrange(self.window, raise_=tuple(new))
            fit_screen(self.window)  # napari's stacking may have grown it


def fit_screen(window) -> None:
    """Shrink ``window`` to its screen's free area (its frame included)."""
    if window.windowState() & (Qt.WindowMaximized | Qt.WindowFullScreen):
        return
    window.layout().activate()  # the minimum size of the docks as they are now
    frame = window.frameGeometry().size() - window.geometry().size()
    window.resize(window.size().boundedTo(window.screen().availableSize() - frame))


def keep_layout(viewer) -> None:
    """Arrange the plugin's docks of ``viewer`` now and whenever one is added."""
    window = viewer.window._qt_window
    if window.findChild(_Keeper) is None:
        window.setCorner(Qt.BottomLeftCorner, Qt.BottomDockWidgetArea)
        window.setCorner(Qt.BottomRightCorner, Qt.BottomDockWidgetArea)
        window.installEventFilter(_Keeper(window))
