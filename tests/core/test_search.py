"""Search mode: TPE + successive halving within a budget of training iterations."""

from collections import Counter

import pytest

from napari_peft_sam.core import catalog, results
from napari_peft_sam.core.errors import UserError
from napari_peft_sam.core.records import RunRecord
from napari_peft_sam.core.search import best_point, iterations_used, run_search
from napari_peft_sam.core.sweep import SweepSpec

BOX = catalog.SINGLE_BOX.name
SPEC = {
    "name": "search",
    "dataset": "organoids",
    "model": "tiny",
    "method": "lora",
    "grid": {"rank": [1, 2, 4, 8], "alpha": [1, 4]},
    "fixed": {"iterations": 150, "val_interval": 50},
    "metrics": [BOX],
    "seeds": 2,
}


def score(point):
    return 0.01 * point["rank"] + 0.001 * point["alpha"] + 0.0005 * point["seed"]


def reporting_runner(spec, point, run_dir, report=None, stop=None, on_event=None):
    """Reports a value that ranks points like the final one, at 50, 100, 150."""
    for step in (50, 100, 150):
        report(score(point) * step / 150, step)
    return RunRecord(
        run_dir=str(run_dir),
        dataset=spec.dataset,
        model=spec.model,
        method=spec.method,
        params=dict(point),
        metrics={BOX: score(point)},
        iterations=150,
    )


def search(tmp_path, **options):
    spec = SweepSpec.from_dict(SPEC)
    storage = str(tmp_path / "s.journal")
    study = run_search(
        storage, spec, 1000, tmp_path / "runs", reporting_runner, seed=0, **options
    )
    return storage, study


def test_search_stays_within_its_budget_and_prunes_only_before_the_end(tmp_path):
    storage, study = search(tmp_path, max_iterations=1500)
    assert iterations_used(study) <= 1500
    trained = [t for t in study.trials if not t.user_attrs.get("duplicate")]
    pruned = [t for t in trained if t.state.name == "PRUNED"]
    assert pruned and {t.user_attrs["iterations"] for t in pruned} <= {50, 100}
    complete = [t for t in trained if t.state.name == "COMPLETE"]
    assert all(t.user_attrs["iterations"] == 150 for t in complete)
    # every trained trial is a row of the store, with its seed
    rows = results.rows(storage, [study.study_name])
    assert len(rows) == len(trained) and all("seed" in r["params"] for r in rows)


def test_search_repeats_a_point_with_new_seeds_and_answers_by_the_mean(tmp_path):
    _, study = search(tmp_path, max_iterations=3000)
    visits = Counter(
        (t.user_attrs["values"]["rank"], t.user_attrs["values"]["alpha"])
        for t in study.trials
        if not t.user_attrs.get("duplicate")
    )
    assert max(visits.values()) <= 2  # the spec's seeds
    seeds = {
        t.user_attrs["values"]["seed"]
        for t in study.trials
        if not t.user_attrs.get("duplicate")
    }
    assert seeds == {0, 1}
    point, value, n = best_point(study)
    assert point == {"rank": 8, "alpha": 4}
    done = [score(point | {"seed": s}) for s in range(n)]
    assert value == pytest.approx(sum(done) / n)


def test_a_budget_below_one_run_is_refused(tmp_path):
    with pytest.raises(UserError, match="less than one run"):
        search(tmp_path, max_iterations=100)


def test_real_search_reports_msa_on_validation_images_at_each_rung(tmp_path):
    """Tiny model, real training: the intermediate value is mSA of the latest
    checkpoint at every rung before the last step."""
    spec = SweepSpec.from_dict(
        {
            **SPEC,
            "grid": {"rank": [1, 2]},
            "fixed": {"iterations": 4, "val_interval": 2, "checkpoint_interval": 2},
            "eval_images": 1,
            "seeds": 1,
        }
    )
    study = run_search(
        str(tmp_path / "s.journal"), spec, 2, tmp_path / "runs", signal="msa"
    )
    trained = [t for t in study.trials if not t.user_attrs.get("duplicate")]
    assert len(trained) == 2 and trained[0].state.name == "COMPLETE"
    assert set(trained[0].intermediate_values) == {2}  # not at step 4, the end
    assert 0.0 <= trained[0].intermediate_values[2] <= 1.0
    assert trained[0].user_attrs["metrics"][BOX] is not None
