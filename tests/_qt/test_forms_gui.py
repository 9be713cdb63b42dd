"""The Train and Sweep forms (issue 28, items 6-7): one form generator, the
SLURM options from ``core.options``' table, a trial's first phase named, and
refusals that name the dock's fields instead of the CLI's flags."""

from __future__ import annotations

import os

import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFormLayout

from .conftest import notifications, wait_until
from .test_preflight_gui import checked
from .test_widgets import use_sample

pytestmark = pytest.mark.qt

SLURM_VALUES = {  # one value per SLURM row, as test_options gives the CLI
    "partition": "gpu",
    "gpus": 2,
    "time": 30,
    "mem": 64,
    "cpus": 16,
    "setup": ["module load cuda", "source env"],
    "array_parallelism": 3,
}


def test_train_and_model_forms_come_from_one_generator(docked, qtbot):
    from napari_peft_sam._qt._form import KnobForm

    _, widgets = docked
    model, train = widgets["Model and method"], widgets["Train"]
    assert type(model.form) is KnobForm and type(train.form) is KnobForm
    model.model.setCurrentText("tiny")
    recipe = train.form.values()
    iterations = train.form.editors["iterations"]
    iterations.setValue(recipe["iterations"] + 3)
    assert train.session.choices.train == {"iterations": recipe["iterations"] + 3}
    assert train.form.labels["iterations"].font().bold()
    assert not train.form.labels["lr"].font().bold()
    # the advanced settings are folded into their own section
    assert "batch_size" in train.form.editors and "memory_saving" in train.form.editors
    model.model.setCurrentText("demo")  # another recipe: the edit stays
    assert iterations.value() == recipe["iterations"] + 3
    qtbot.mouseClick(train.reset_button, Qt.LeftButton)
    assert train.session.choices.train == {}
    assert not train.form.labels["iterations"].font().bold()
    defaults = {
        s["name"]: s["default"] for s in train.session.catalog["train_settings"]
    }
    demo = train.session.catalog["recipes"]["demo"]["settings"]
    assert iterations.value() == (defaults | demo)["iterations"]  # the recipe again
    # the method form: the same generator, every value explicit, no bold marks
    model.method.setCurrentText("lora")
    model.form.editors["rank"].setValue(16)
    assert model.session.choices.method["rank"] == 16
    assert model.session.choices.method["method"] == "lora"
    assert not model.form.labels["rank"].font().bold()


def test_sweep_slurm_options_are_the_tables_rows(docked, monkeypatch):
    """Every row of ``core.options.SLURM`` is a labelled field of the Sweep
    dock, and what the fields hold reaches submitit as the CLI's flags do
    (tests/core/test_options.py)."""
    import submitit

    from napari_peft_sam.core import executors, options

    _, widgets = docked
    sweep = widgets["Sweep"]
    sweep.executor.setCurrentIndex(sweep.executor.findData("slurm"))
    assert sweep.slurm.isVisibleTo(sweep)
    form = sweep.slurm.layout()
    assert isinstance(form, QFormLayout)
    fields = {}
    for row in range(form.rowCount()):
        label = form.itemAt(row, QFormLayout.LabelRole).widget()
        fields[label.text()] = form.itemAt(row, QFormLayout.FieldRole).widget()
    assert set(SLURM_VALUES) == {o.field for o in options.SLURM}
    for option in options.SLURM:  # a row missing from the dock fails here
        assert option.label in fields, f"{option.field} is not in the Sweep dock"
    # defaults: what the CLI leaves unset
    unset = sweep.slurm.options()
    for option in options.SLURM:
        assert unset[option.field] in (option.default, None, []), option.field
    for option in options.SLURM:
        widget, value = fields[option.label], SLURM_VALUES[option.field]
        if option.kind == "int":
            widget.setValue(value)
        else:
            widget.setText("; ".join(value) if isinstance(value, list) else value)
    assert sweep.slurm.options() == SLURM_VALUES

    seen = {}

    class FakeExecutor:
        def __init__(self, folder, cluster):
            seen["cluster"] = cluster

        def update_parameters(self, **params):
            seen.update(params)

    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    nodes = executors.Nodes("gpu", cpus=32, mem_gb=256, gpus=4)
    monkeypatch.setattr(executors, "partition_nodes", lambda partition=None: nodes)
    executors.EXECUTORS["slurm"].build("folder", sweep.slurm.options())
    for option in options.SLURM:
        assert seen[option.submitit] == SLURM_VALUES[option.field], option.field


def fake_sinfo(tmp_path, monkeypatch) -> None:
    """A cluster whose one partition has 16 CPUs, 62 GB and no GPU."""
    folder = tmp_path / "bin"
    folder.mkdir()
    sinfo = folder / "sinfo"
    sinfo.write_text("#!/bin/sh\necho 'cpu*|16|64000|(null)'\n")
    sinfo.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")


def custom_sweep(widgets, iterations: int = 2):
    widgets["Data"].source.setCurrentText("sample data")
    widgets["Model and method"].model.setCurrentText("tiny")
    widgets["Train"].form.editors["iterations"].setValue(iterations)
    sweep = widgets["Sweep"]
    sweep.preset.setCurrentText("custom (from Data and Model)")
    for row in range(sweep.grid.rowCount()):  # one point: each row's first value
        values = sweep.grid.item(row, 1)
        values.setText(values.text().split(",")[0])
    assert all(len(v) == 1 for v in sweep.grid_values().values())
    return sweep


def test_a_sweep_refusal_names_the_docks_field_not_the_flag(
    docked, qtbot, tmp_path, monkeypatch
):
    _, widgets = docked
    fake_sinfo(tmp_path, monkeypatch)
    sweep = custom_sweep(widgets)
    sweep.executor.setCurrentIndex(sweep.executor.findData("slurm"))
    sweep.slurm.editors["gpus"].setValue(2)
    before = len(notifications())
    qtbot.mouseClick(sweep.start_button, Qt.LeftButton)
    wait_until(qtbot, lambda: sweep.job is not None and sweep.job.finished, 180)
    wanted = (
        "The partition 'cpu' has no GPUs per node; set GPUs per job to 0 "
        "(or another partition)."
    )
    assert notifications()[before:] == [wanted]
    assert sweep.status.text() == f"Sweep failed: {wanted}"
    assert sweep.start_button.isEnabled()


def test_a_training_refusal_names_the_setting_not_the_flag(docked, qtbot, monkeypatch):
    from napari_peft_sam.core import budget

    viewer, widgets = docked
    monkeypatch.setattr(budget, "system_available_mb", lambda: 1150.0)
    use_sample(viewer, widgets)
    widgets["Model and method"].model.setCurrentText("tiny")
    train = widgets["Train"]
    train.form.editors["memory_saving"].setCurrentText("off")
    train.form.editors["n_objects"].setValue(64)
    wait_until(qtbot, lambda: checked(widgets, 1150.0), 120)
    refusal = train.memory.report["refusal"]
    assert "(--memory-saving auto)" in refusal  # core's sentence, as the CLI says it
    wanted = refusal.replace(" (--memory-saving auto)", "")
    assert "set memory saving to auto; same results" in wanted
    assert wanted in train.memory_label.text()
    before = len(notifications())
    qtbot.mouseClick(train.train_button, Qt.LeftButton)
    assert notifications()[before:] == [wanted]
    assert train.status.text() == f"Not started: {wanted}"
    assert train.process is None


def test_a_trials_first_event_says_it_is_starting(docked, qtbot):
    """The first event of a trial whose memory check turned a saving on is a
    ProgressEvent with done == 0 (core/training.py): the trial is starting,
    not evaluating. A real one needs a machine short of memory, so the event
    is sent through the started sweep's controller, where the process's
    events arrive."""
    from napari_peft_sam.core.events import ProgressEvent, StepEvent

    _, widgets = docked
    sweep = custom_sweep(widgets)
    qtbot.mouseClick(sweep.start_button, Qt.LeftButton)
    assert sweep.running
    message = "Memory: about 1.1 GB needed; turned on memory saving 'chunks'."
    sweep.run.event.emit({"trial": 99, "event": ProgressEvent(0, 2, message)})
    row = [sweep.progress.item(r, 0).text() for r in range(sweep.progress.rowCount())]
    state = sweep.progress.item(row.index("99"), 2)
    assert state.text() == "starting training (2 steps)"
    assert state.toolTip() == message
    assert sweep.status.text() == f"Trial 99: {message}"
    step = StepEvent(1, 2, 0.5, 0.3, 0.2, 1e-4, it_per_s=1.0, eta_s=1.0)
    sweep.run.event.emit({"trial": 99, "event": step})
    assert sweep.progress.item(row.index("99"), 2).text() == "step 1/2"
    sweep.run.event.emit({"trial": 99, "event": ProgressEvent(1, 3)})
    assert sweep.progress.item(row.index("99"), 2).text() == "evaluating 1/3"


def test_core_refusals_in_the_docks_words():
    """core's SLURM refusals (raised here) and the flag phrases of its other
    refusals reach the docks without a CLI flag, naming the field as the dock
    labels it; the CLI keeps them as they are."""
    from napari_peft_sam._qt._wording import gui_sentence
    from napari_peft_sam._qt.model_widget import CUSTOM as CUSTOM_MODEL
    from napari_peft_sam._qt.sweep_widget import CUSTOM as CUSTOM_SWEEP
    from napari_peft_sam.core import executors, options
    from napari_peft_sam.core.errors import UserError
    from napari_peft_sam.core.knobs import set_hint

    nodes = executors.Nodes("cpu", cpus=16, mem_gb=62, gpus=0)
    labels = {o.field: o.label for o in options.SLURM}
    for field, too_much in (("gpus", 2), ("cpus", 64), ("mem", 512)):
        with pytest.raises(UserError) as refused:
            executors.slurm_request({field: too_much}, nodes)
        cli = str(refused.value)
        assert f"--{field}" in cli
        gui = gui_sentence(cli)
        assert "--" not in gui and f"set {labels[field]} to " in gui, gui
    assert gui_sentence(set_hint("n_objects", 4)) == "set n objects to 4"
    assert f"'{CUSTOM_MODEL}'" in gui_sentence("needs weights: pass --checkpoint FILE.")
    reused = gui_sentence(
        "pick a new name with `sweep --name NEW` or another --storage"
    )
    assert f"'{CUSTOM_SWEEP}'" in reused
    for cli in (
        "use --device cpu.",
        "split it into smaller sweeps or use --search N.",
        "change the validation fraction (--val-fraction) or the split seed "
        "(--split-seed), or label objects",
        "SLURM has no partition 'x'; --partition takes one of a, b.",
        "run the sweep on a login node of the cluster, or use --executor local.",
    ):
        assert "--" not in gui_sentence(cli), gui_sentence(cli)
