"""One value, one spelling (issue 28 item 6): a Train run's targets ['q', 'v'] and
a sweep's 'q+v' group together; Markdown shows no None and no Python lists;
a sweep over napari layers is named after the layers, not their files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna

from napari_peft_sam.core import catalog, results
from napari_peft_sam.core.events import run_to_end
from napari_peft_sam.core.heatmap import heatmap_data
from napari_peft_sam.core.knobs import Knob, spelled
from napari_peft_sam.core.records import RunRecord
from napari_peft_sam.core.runfolder import CARD
from napari_peft_sam.core.store import add_record, open_storage, open_study

BOX = catalog.SINGLE_BOX.name
SETTINGS = {"iterations": 80, "lr": 1e-3, "seed": 0}


def test_a_selection_has_one_spelling_whatever_its_order_or_type():
    targets = Knob("subset", "", choices=("q", "k", "v", "mlp"))
    for value in (("q", "v"), ["v", "q"], "q+v", "v,q", "v+q+v"):
        assert spelled(value, targets) == "q+v"
    assert spelled([3, 1, 2], Knob("ints", "")) == "1+2+3"
    assert spelled(0.001) == 0.001 and spelled(None, targets) is None
    assert spelled(["q", "v"]) == "q+v"  # no knob: joined as given


def _old_train_attrs(alpha: int, score: float) -> dict:
    """A GUI Train run's trial as stores written before one spelling hold it."""
    params = {"dataset": "organoids", "model": "tiny", "lr": 1e-3, "alpha": alpha}
    params |= {"rank": 4, "targets": ["q", "v"]}
    return {
        "run_dir": None,
        "dataset": "organoids",
        "model": "tiny",
        "method": "lora",
        "params": params,
        "values": params,
        "point": repr(sorted(params.items())),
        "hyperparameters": {"method": "lora", "rank": 4, "alpha": alpha}
        | {"targets": ["q", "v"], "lr": 1e-3},
        "settings": SETTINGS,
        "metrics": {BOX: score},
    }


def _sweep_record(alpha: int, score: float) -> RunRecord:
    return RunRecord(
        run_dir=None,
        dataset="organoids",
        model="tiny",
        method="lora",
        params={"alpha": alpha, "rank": 4, "targets": "q+v", "dataset": "organoids"},
        hyperparameters={"method": "lora", "rank": 4, "alpha": alpha}
        | {"targets": ["q", "v"], "lr": 1e-3},
        settings=SETTINGS,
        metrics={BOX: score},
    )


def test_a_train_run_and_a_sweep_run_share_the_heatmap(tmp_path):
    storage = str(tmp_path / "results.journal")
    study = open_study(open_storage(storage, write=True), "gui", create=True)
    study.add_trial(  # written raw: an old row is normalised when it is read
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE,
            value=0.5,
            user_attrs=_old_train_attrs(1, 0.5),
        )
    )
    add_record(storage, "sweep", _sweep_record(2, 0.7).attrs())
    table = results.rows(storage)
    assert [r["params"]["targets"] for r in table] == ["q+v", "q+v"]
    data = heatmap_data(table, BOX, "alpha", "targets")
    assert data.left_out == [] and data.y_values == ["q+v"]
    assert data.cells[(1, "q+v")].mean == 0.5 and data.cells[(2, "q+v")].mean == 0.7
    # the stored row is spelled once already, the sweep's point key left as queued
    stored = open_study(open_storage(storage), "sweep").trials[0].user_attrs
    assert stored["values"]["targets"] == "q+v" and stored["params"]["targets"] == "q+v"


def test_markdown_shows_empty_cells_and_one_spelling():
    table = [
        {
            "status": "complete",
            "params": {"targets": ["q", "v"], "dropout": None, "rank": 4},
            "metrics": {BOX: 0.61, catalog.SINGLE_POINT.name: None},
        },
        {
            "status": "fail",
            "params": {"targets": ("q", "k"), "rank": 8},
            "metrics": {},
            "error": "out of memory",
        },
    ]
    text = results.markdown(table)
    assert "None" not in text and "[" not in text and "n/a" not in text, text
    header, _, body = text.splitlines()[:3]
    cells = [c.strip() for c in body.strip("|").split("|")]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert dict(zip(columns, cells, strict=True)) == {
        "rank": "4",
        "dropout": "",
        "targets": "q+v",
        BOX: "0.61",
        catalog.SINGLE_POINT.name: "",
    }
    assert "failed: rank 8, targets q+k: out of memory" in text


def test_a_sweep_over_layers_is_named_after_them(tmp_path):
    """The Sweep widget writes layers under home/data/<hash> and names the
    spec's dataset after the layers: rows, cards and the held-out set say that
    name, never the hashed folder."""
    from napari_peft_sam.core.sources import sample_dataset, write_pairs
    from napari_peft_sam.core.sweep import SweepSpec
    from napari_peft_sam.core.worker import run_worker

    samples = list(sample_dataset("organoids"))[:3]
    folder = tmp_path / "home" / "data" / "0123456789ab"
    images, labels = write_pairs(
        [np.stack([s.image[..., 0] for s in samples])],
        [np.stack([s.labels for s in samples])],
        folder,
    )
    name = "napari layers organoid layers"
    spec = {
        "name": "layers",
        "dataset": name,
        "model": "tiny",
        "method": "lora",
        "grid": {"rank": [2]},
        "fixed": {"iterations": 2, "n_objects": 2, "n_sub_iterations": 1},
        "metrics": [BOX],
        "data": {"images": images, "labels": labels, "stack": True}
        | {"val_fraction": 0.34},
    }
    storage = str(tmp_path / "results.journal")
    run_worker(storage, SweepSpec.from_dict(spec), tmp_path / "runs")
    (row,) = results.rows(storage)
    assert row["status"] == "complete", row["error"]
    assert row["dataset"] == name
    assert row["evaluated_on"]["source"] == f"{name} (held-out)"
    card = json.loads((Path(row["run_dir"]) / CARD).read_text())
    assert card["data"]["source"] == name
    assert str(folder) not in results.markdown([row])


def _layer_run(run_dir, storage, rank: int) -> dict:
    """A GUI Train run on three organoid images as napari layers (tiny model)."""
    from napari_peft_sam.core import service_runs
    from napari_peft_sam.core.sources import sample_dataset

    samples = list(sample_dataset("organoids"))[:3]
    source = {
        "kind": "arrays",
        "images": [np.stack([s.image[..., 0] for s in samples])],
        "labels": [np.stack([s.labels for s in samples])],
        "names": ["organoid layers"],
        "stack": True,
        "source": "napari layers organoid layers",
    }
    config = {
        "data": {"val_fraction": 0.34, "stack": True},
        "model": {"name": "tiny"},
        "method": {"method": "lora", "rank": rank},
        "train": {"iterations": 2, "n_objects": 2, "n_sub_iterations": 1},
    }
    return run_to_end(service_runs.train(config, str(run_dir), source, storage, "gui"))


def test_the_base_model_is_evaluated_once_for_two_runs_on_one_test_set(tmp_path):
    """Before -> after: two runs on the same layers share one base evaluation;
    a restart (a fresh process's memo) reads it from home/baselines."""
    from napari_peft_sam.core import baseline
    from napari_peft_sam.core.evaluation import evaluate_model

    storage = str(tmp_path / "results.journal")
    for rank in (2, 4):
        _layer_run(tmp_path / f"rank{rank}", storage, rank)
    table = results.rows(storage)
    assert len(table) == 2 and all(baseline.tuned(r) for r in table)
    calls = []

    def counting(test_set, metrics, **kwargs):
        calls.append((len(test_set), list(metrics), kwargs["model"]))
        return (yield from evaluate_model(test_set, metrics, **kwargs))

    home = tmp_path / "home"
    before = run_to_end(baseline.before_scores(table, home, evaluate=counting))
    prompt_metrics = [m for m in table[0]["metrics"] if m != catalog.AIS.name]
    assert calls == [(table[0]["evaluated_on"]["images"], prompt_metrics, "tiny")]
    assert set(before) == {r["run_dir"] for r in table}
    first, second = before.values()
    assert first == second and set(first) == set(prompt_metrics)
    assert isinstance(first[BOX], float)
    # a restart: the per-process memo is gone, the cached file answers
    baseline._KEYS.clear()
    again = run_to_end(baseline.before_scores(table, home, evaluate=counting))
    assert again == before and len(calls) == 1
    assert len(list((home / baseline.FOLDER).glob("*.json"))) == 1


def test_two_gui_runs_with_the_same_settings_are_two_rows(tmp_path):
    """A single run's row is never hidden behind an earlier one of the same
    grid values (only a sweep's retries of one point collapse)."""
    storage = str(tmp_path / "results.journal")
    for score in (0.5, 0.6):
        add_record(storage, "gui", _sweep_record(2, score).attrs())
    assert sorted(r["metrics"][BOX] for r in results.rows(storage)) == [0.5, 0.6]
