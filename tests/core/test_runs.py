"""One path for a run: the GUI's run, a sweep trial and the demo make the same rows."""

from __future__ import annotations

import numpy as np
import pytest

from napari_peft_sam.core import results
from napari_peft_sam.core.events import run_to_end
from napari_peft_sam.core.sweep import SweepSpec
from napari_peft_sam.core.worker import run_worker

QUICK = {"iterations": 2, "n_objects": 2, "n_sub_iterations": 1, "val_interval": 2}
SPEC = {
    "name": "keys",
    "dataset": "organoids",
    "model": "tiny",
    "method": "lora",
    "grid": {"rank": [2]},
    "fixed": QUICK,
    "metrics": ["single box"],
    "eval_images": 1,
}


def _gui_run(tmp_path, storage):
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
        "method": {"method": "lora", "rank": 2},
        "train": QUICK,
    }
    return run_to_end(
        service_runs.train(config, str(tmp_path / "gui-run"), source, storage, "gui")
    )


def test_gui_run_sweep_trial_and_demo_rows_have_the_same_keys(tmp_path):
    from napari_peft_sam.core.demo import run_demo

    storage = str(tmp_path / "results.journal")
    record = _gui_run(tmp_path, storage)
    assert record["status"] == "complete" and record["metrics"]
    run_worker(storage, SweepSpec.from_dict(SPEC), tmp_path / "runs")
    demo_spec = SweepSpec.from_dict({**SPEC, "name": "demo-tiny"})
    out = run_demo(tmp_path / "demo", log=lambda m: None, spec=demo_spec)
    gui = results.rows(storage, ["gui"])
    sweep = results.rows(storage, ["keys"])
    demo = results.rows(out["storage"], ["demo-tiny"])
    reference = results.rows(out["storage"], ["demo-tiny-reference"])
    rows = [gui[0], sweep[0], demo[0], reference[0]]
    assert all(r["status"] == "complete" for r in rows)
    assert len({tuple(sorted(r)) for r in rows}) == 1, [sorted(r) for r in rows]
    for r in rows[:3]:  # trained runs: every part of the record is filled in
        assert r["metrics"] and r["settings"]["iterations"] == 2
        assert r["evaluated_on"]["images"] >= 1 and r["trainable_parameters"] > 0
    assert gui[0]["settings"]["lr"] == 1e-3  # the tiny recipe, as on the CLI


def test_a_run_records_where_each_setting_came_from(tmp_path):
    from napari_peft_sam.core.runfolder import read_card

    _gui_run(tmp_path, None)
    card = read_card(tmp_path / "gui-run")
    sources = card["run_config"]["train_sources"]
    assert sources["iterations"] == "explicit" and sources["lr"].startswith("recipe")
    assert sources["weight_decay"] == "default"


@pytest.mark.parametrize("argv", [["--help"], ["methods", "--json"]])
def test_help_and_methods_import_neither_torch_nor_micro_sam(argv):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from napari_peft_sam.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = {'torch', 'micro_sam', 'segment_anything'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
