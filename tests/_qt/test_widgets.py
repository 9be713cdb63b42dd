"""The dock widgets, clicked like a user would, on the real model service."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer

from .conftest import notifications, wait_until

pytestmark = pytest.mark.qt


def use_sample(viewer, widgets, domain="nuclei"):
    viewer.open_sample("napari-peft-sam", domain)
    data = widgets["Data"]
    data.source.setCurrentText("napari layers")
    data.image_layer.setCurrentText(f"{domain} images")
    data.labels_layer.setCurrentText(f"{domain} labels")
    assert data.stack.isChecked()  # a 12-plane stack is recognised


def choose(widgets, model="tiny", iterations=12):
    widgets["Model and method"].model.setCurrentText(model)
    widgets["Train"].form.editors["iterations"].setValue(iterations)
    widgets["Train"].form.editors["lr"].setValue(1e-3)


def test_data_widget_counts_layers(docked, qtbot):
    viewer, widgets = docked
    use_sample(viewer, widgets)
    qtbot.mouseClick(widgets["Data"].check, Qt.LeftButton)
    summary = widgets["Data"].summary
    assert summary["images"] == 12 and summary["train"] + summary["val"] == 12
    assert summary["objects"] > 100


def test_method_form_and_live_counts(docked, qtbot):
    _, widgets = docked
    model = widgets["Model and method"]
    model.model.setCurrentText("vit_b")
    model.method.setCurrentText("lora")
    model.form.editors["rank"].setValue(32)
    wait_until(
        qtbot,
        lambda: (
            bool(model.estimate) and model.estimate["encoder_trainable"] == 1_179_648
        ),
        30,
    )
    assert (
        "rank" in model.form.editors["rank"].toolTip()
        or model.form.editors["rank"].toolTip()
    )
    model.method.setCurrentText("fact")
    assert "rank" in model.form.editors and "dropout" in model.form.editors
    wait_until(qtbot, lambda: model.estimate["encoder_trainable"] < 400_000, 30)
    assert model.estimate["memory_mb"] > 1000  # vit_b does not train in 1 GB


def test_train_from_layers_adds_a_results_row(docked, qtbot, tmp_path, monkeypatch):
    viewer, widgets = docked
    use_sample(viewer, widgets)
    choose(widgets)
    train, results = widgets["Train"], widgets["Results"]
    qtbot.mouseClick(train.train_button, Qt.LeftButton)
    wait_until(qtbot, lambda: train.last_result is not None, 600)
    run_dir = Path(train.last_result["run_dir"])
    assert (run_dir / "adapter_best.pt").exists() and (
        run_dir / "data" / "images"
    ).is_dir()
    wait_until(qtbot, lambda: results.table.rowCount() == 1, 30)
    headers = [
        results.table.horizontalHeaderItem(j).text()
        for j in range(results.table.columnCount())
    ]
    row = {h: results.table.item(0, j).text() for j, h in enumerate(headers)}
    assert (
        row["method"] == "lora" and row["model"] == "tiny" and row["single box"] != ""
    )
    assert len(train.loss_plot.series["loss"]) == 12
    prompt = widgets["Prompt tester"]
    assert prompt.model.findData(str(run_dir)) >= 0  # pickable as a model
    label = prompt.model.itemText(prompt.model.findData(str(run_dir)))
    assert label.startswith(f"run: {run_dir.name} (single box 0.")  # with its score
    results.table.cellDoubleClicked.emit(0, 0)
    assert prompt.model.currentData() == str(run_dir)

    # Export, from the Results panel (the selected row) and after training
    from qtpy.QtWidgets import QFileDialog

    targets = iter([tmp_path / "from-results", tmp_path / "from-train"])
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", lambda *a: (str(next(targets)), a[-1])
    )
    results.table.selectRow(0)
    for button in (results.run_button, train.export_button):
        qtbot.mouseClick(button, Qt.LeftButton)
        dialog = next(w for w in _dialogs() if w.isVisible())
        qtbot.mouseClick(dialog.buttons["merged"], Qt.LeftButton)
        qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
        wait_until(qtbot, lambda d=dialog: d.result is not None, 120)
    assert (tmp_path / "from-results.pt").is_file()
    assert (tmp_path / "from-train.pt").is_file()


def _dialogs():
    from qtpy.QtWidgets import QApplication

    from napari_peft_sam._qt.export_dialog import ExportDialog

    return [w for w in QApplication.topLevelWidgets() if isinstance(w, ExportDialog)]


def test_stop_mid_run_leaves_a_checkpoint(docked, qtbot):
    viewer, widgets = docked
    use_sample(viewer, widgets)
    choose(widgets, iterations=5000)
    train = widgets["Train"]
    train.start()
    wait_until(qtbot, lambda: train.progress.value() >= 3, 120)
    qtbot.mouseClick(train.stop_button, Qt.LeftButton)
    wait_until(qtbot, lambda: train.last_result is not None, 120)
    result = train.last_result
    assert result["status"] == "stopped" and 3 <= result["iterations"] < 5000
    run_dir = Path(result["run_dir"])
    assert (run_dir / "adapter_latest.pt").exists()
    from napari_peft_sam.core.checkpoints import load_run

    model, card = load_run(run_dir, tag="latest")  # the checkpoint is usable
    assert card["method"]["method"] == "lora"
    assert train.train_button.isEnabled()


def test_point_prompt_gives_a_mask_and_iou(docked, qtbot):
    viewer, widgets = docked
    viewer.open_sample("napari-peft-sam", "nuclei")
    viewer.dims.set_current_step(0, 0)
    prompt = widgets["Prompt tester"]
    prompt.image.setCurrentText("nuclei images")
    prompt.model.setCurrentText("demo")
    prompt.truth.setCurrentText("nuclei labels")
    qtbot.mouseClick(prompt.start_button, Qt.LeftButton)
    labels = viewer.layers["nuclei labels"].data[0]
    ys, xs = np.nonzero(labels == np.bincount(labels.ravel())[1:].argmax() + 1)
    viewer.layers["prompts"].add([[ys.mean(), xs.mean()]])
    wait_until(qtbot, lambda: viewer.layers["mask (model)"].data.sum() > 20, 60)
    mask = viewer.layers["mask (model)"].data
    assert mask.shape == labels.shape and mask.sum() > 20
    assert prompt.ious["mask (model)"] > 0.3
    assert "IoU" in prompt.readout.text()
    prompt.compare.setChecked(True)
    wait_until(qtbot, lambda: viewer.layers["mask (base model)"].data.any(), 60)
    qtbot.mouseClick(prompt.commit_button, Qt.LeftButton)
    assert viewer.layers["committed objects"].data.max() == 1
    assert len(viewer.layers["prompts"].data) == 0
    qtbot.mouseClick(prompt.auto_button, Qt.LeftButton)
    wait_until(qtbot, lambda: "automatic (amg)" in viewer.layers, 120)
    assert viewer.layers["automatic (amg)"].data.shape == labels.shape
    text = prompt.auto_readout.text()
    assert "objects (amg)" in text or "pred_iou_thresh 0.88" in text, text


def test_two_point_sweep_inline_adds_two_rows(docked, qtbot):
    viewer, widgets = docked
    widgets["Data"].source.setCurrentText("sample data")
    choose(widgets, iterations=4)
    sweep, results = widgets["Sweep"], widgets["Results"]
    sweep.preset.setCurrentText("custom (from Data and Model)")
    sweep.fill_custom()
    grid = {"rank": [2, 4], "iterations": [4]}
    sweep.set_grid(grid)
    assert (
        sweep.estimate.text().startswith("<b>2 runs</b>")
        and "here" in sweep.estimate.text()
    )
    qtbot.mouseClick(sweep.start_button, Qt.LeftButton)
    wait_until(qtbot, lambda: sweep.job is not None and sweep.job.finished, 300)
    assert sweep.job.error is None
    wait_until(qtbot, lambda: results.table.rowCount() == 2, 30)
    studies = {r["study"] for r in results.rows}
    assert studies == {sweep.spec["name"]}
    assert sorted(r["params"]["rank"] for r in results.rows) == [2, 4]
    assert all(r["status"] == "complete" for r in results.rows)
    assert results.heatmap.cells  # rank on one axis
    csv_path = Path(sweep.session.home) / "table.csv"
    results.export("csv", str(csv_path))
    wait_until(qtbot, csv_path.exists, 30)
    assert len(csv_path.read_text().strip().splitlines()) == 3  # header + 2 runs
    md_path = csv_path.with_suffix(".md")
    results.export("markdown", str(md_path))
    wait_until(qtbot, md_path.exists, 30)
    table = [line for line in md_path.read_text().splitlines() if line.startswith("|")]
    assert "rank" in table[0] and len(table) == 4  # header, rule, 2 runs


def test_labels_of_the_wrong_shape_notify(docked, qtbot):
    viewer, widgets = docked
    viewer.add_image(np.random.rand(64, 64), name="img")
    viewer.add_labels(np.ones((32, 32), np.int32), name="lab")
    data = widgets["Data"]
    data.source.setCurrentText("napari layers")
    data.image_layer.setCurrentText("img")
    data.labels_layer.setCurrentText("lab")
    qtbot.mouseClick(data.check, Qt.LeftButton)  # no exception escapes
    assert any("differ in shape" in m for m in notifications())
    assert data.result.text().startswith("Problem:")
    train = widgets["Train"]
    qtbot.mouseClick(train.train_button, Qt.LeftButton)
    assert train.process is None and train.train_button.isEnabled()


def test_a_killed_training_process_leaves_napari_running(docked, qtbot):
    viewer, widgets = docked
    use_sample(viewer, widgets)
    choose(widgets, iterations=5000)
    train = widgets["Train"]
    train.start()
    wait_until(qtbot, lambda: train.progress.value() >= 27, 120)  # a checkpoint
    train.process.kill()  # what the OOM killer or a segfault does
    wait_until(qtbot, lambda: not train.running, 30)
    assert any("ended unexpectedly" in m for m in notifications())
    assert train.train_button.isEnabled()
    assert Path(train.run_dir, "adapter_latest.pt").exists()  # saved work is kept


def test_event_loop_stays_responsive_while_training(docked, qtbot):
    viewer, widgets = docked
    use_sample(viewer, widgets)
    choose(widgets, iterations=40)
    train = widgets["Train"]
    ticks: list[float] = []
    timer = QTimer(interval=10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    train.start()
    wait_until(qtbot, lambda: train.progress.value() >= 1, 120)
    ticks.clear()  # measure while steps run
    wait_until(qtbot, lambda: train.progress.value() >= 40, 240)
    timer.stop()
    gaps = np.diff(ticks)
    print(f"event loop: {len(ticks)} ticks, max gap {gaps.max() * 1000:.1f} ms")
    assert len(ticks) > 50 and gaps.max() < 0.1
    wait_until(qtbot, lambda: not train.running, 240)


def test_train_widget_sends_what_the_cli_would(docked, tmp_path):
    from napari_peft_sam.cli import build_parser
    from napari_peft_sam.commands.run import run_config
    from napari_peft_sam.core.recipes import resolve

    viewer, widgets = docked
    use_sample(viewer, widgets)
    widgets["Model and method"].model.setCurrentText("demo")
    form = widgets["Train"].form
    form.editors["lr"].setValue(5e-4)
    form.editors["iterations"].setValue(40)
    form.editors["n_objects"].setValue(4)
    request = widgets["Train"].run_request()
    assert request.config["train"] == {"iterations": 40, "lr": 5e-4, "n_objects": 4}
    gui, gui_sources = resolve(request.config["train"], request.config["model"]["name"])
    args = build_parser().parse_args(
        [
            "train",
            "--dataset",
            "nuclei",
            "--model",
            "demo",
            "--method",
            "lora",
            "--lr",
            "5e-4",
            "--iterations",
            "40",
            "--n-objects",
            "4",
            "--out",
            str(tmp_path / "x"),
        ]  # fmt: skip
    )
    cli = run_config(args)
    assert gui.to_dict() == cli.train.to_dict()  # field by field
    assert gui_sources == cli.train_sources
    assert request.config["method"] == cli.method.to_dict()
