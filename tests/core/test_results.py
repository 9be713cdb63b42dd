"""Tables and heatmaps over repeated seeds: means, intervals, the paired test,
and heatmaps that only combine runs differing in the two plotted values."""

import csv
import io
import math

import pytest

from napari_peft_sam.core import catalog, results, stats
from napari_peft_sam.core.heatmap import heatmap_data
from napari_peft_sam.core.records import RunRecord
from napari_peft_sam.core.store import add_record

BOX, POINT = catalog.SINGLE_BOX.name, catalog.SINGLE_POINT.name


def row(params, metrics, study="s", settings=None, **extra):
    return {
        "study": study,
        "trial": 0,
        "status": "complete",
        "dataset": "organoids",
        "model": "tiny",
        "method": "lora",
        "params": params,
        "settings": settings or {"iterations": 80, "seed": 0},
        "hyperparameters": {},
        "metrics": metrics,
        "error": None,
        **extra,
    }


# three points x three seeds: rank 4 is best, rank 2 is close but noisy (a tie),
# rank 1 is worse on every seed
SCORES = {1: [0.10, 0.12, 0.11], 2: [0.20, 0.28, 0.16], 4: [0.22, 0.26, 0.24]}


def seeded_table():
    return [
        row({"rank": r, "seed": s}, {BOX: v, POINT: v / 2})
        for r, values in SCORES.items()
        for s, v in enumerate(values)
    ]


def test_student_t_and_the_paired_test_match_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 9, 30):
        assert stats.t_quantile(0.95, df) == pytest.approx(
            scipy_stats.t.ppf(0.975, df), abs=1e-9
        )
    a, b = {0: 0.22, 1: 0.26, 2: 0.24}, {0: 0.20, 1: 0.28, 2: 0.16}
    expected = scipy_stats.ttest_rel(list(a.values()), list(b.values())).pvalue
    assert stats.paired_p(a, b) == pytest.approx(expected, abs=1e-12)
    assert stats.paired_p({0: 1.0}, {0: 0.5}) is None  # one shared seed: no test


def test_seeded_markdown_has_intervals_n_and_marks():
    text = results.markdown(seeded_table())
    lines = text.splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[:5]]
    assert cells[0] == ["rank", "n", BOX, POINT]
    by_rank = {c[0]: c for c in cells[2:5]}
    half = stats.t_quantile(0.95, 2) * 0.01 / math.sqrt(3)  # sd of rank 1 is 0.01
    assert by_rank["1"][1] == "3"
    assert by_rank["1"][2] == f"0.110 ± {half:.3f}"  # worse: no mark
    assert by_rank["4"][2].startswith("**0.240 ± ") and by_rank["4"][2].endswith("**")
    assert by_rank["2"][2].endswith(" ≈")  # the paired test cannot tell it apart
    assert "Student t" in text and "paired t-test" in text and "two-sided" in text


def test_single_seed_tables_stay_as_they_were():
    table = [row({"rank": r}, {BOX: v[0]}) for r, v in SCORES.items()]
    text = results.markdown(table)
    assert text.splitlines()[0] == f"| rank | {BOX} |"
    assert text.splitlines()[2] == "|    1 |        0.1 |"
    assert "±" not in text and len(text.splitlines()) == 5
    assert " mean" not in results.to_csv(table).splitlines()[0]


def test_seeded_csv_adds_mean_ci_vs_best_and_n_per_run():
    reader = csv.DictReader(io.StringIO(results.to_csv(seeded_table())))
    out = list(reader)
    assert len(out) == 9  # one row per run
    assert {f"{BOX} mean", f"{BOX} ci95", f"{BOX} vs best", "n"} <= set(
        reader.fieldnames
    )
    best = [r for r in out if r["rank"] == "4"]
    assert {r[f"{BOX} vs best"] for r in best} == {"best"}
    assert float(best[0][f"{BOX} mean"]) == pytest.approx(0.24)
    assert float(best[0][f"{BOX} ci95"]) > 0 and best[0]["n"] == "3"


def test_heatmap_marks_ties_and_outlines_the_best():
    table = [
        row(
            {"rank": r["params"]["rank"], "alpha": 1, "seed": r["params"]["seed"]},
            r["metrics"],
        )
        for r in seeded_table()
    ]
    data = heatmap_data(table, BOX, "alpha", "rank")
    assert data.seeded and not data.left_out
    assert data.cells[(1, 4)].mark == "best" and data.cells[(1, 2)].mark == "tie"
    assert data.cells[(1, 1)].mark is None and data.cells[(1, 1)].n == 3
    assert data.cells[(1, 4)].mean == pytest.approx(0.24)


def test_heatmap_never_mixes_runs_of_different_iteration_counts(tmp_path):
    """A 300-iteration GUI run and an 80-iteration sweep: never one grid."""
    storage = str(tmp_path / "results.journal")

    def record(rank, alpha, iterations, score, params):
        return RunRecord(
            run_dir=None,
            dataset="organoids",
            model="tiny",
            method="lora",
            params=params,
            hyperparameters={
                "method": "lora",
                "rank": rank,
                "alpha": alpha,
                "lr": 1e-3,
            },
            settings={"iterations": iterations, "lr": 1e-3, "seed": 0},
            metrics={BOX: score},
            iterations=iterations,
        ).attrs()

    for rank in (2, 8):
        for alpha in (1, 4):
            score = 0.1 + 0.01 * rank + 0.001 * alpha
            add_record(
                storage,
                "sweep",
                record(rank, alpha, 80, score, {"rank": rank, "alpha": alpha}),
            )
    gui = {"dataset": "organoids", "model": "tiny", "lr": 1e-3, "rank": 8, "alpha": 4}
    add_record(storage, "runs", record(8, 4, 300, 0.9, gui))
    data = heatmap_data(results.rows(storage), BOX, "alpha", "rank")
    assert len(data.cells) == 4
    assert data.cells[(4, 8)].mean == pytest.approx(0.184)  # the sweep's, not 0.9
    assert data.left_out == ["1 run left out: other settings (iterations 300 vs 80)"]
    png = results.heatmap(
        results.rows(storage), BOX, "alpha", "rank", tmp_path / "h.png"
    )
    assert png.left_out == data.left_out and (tmp_path / "h.png").stat().st_size > 1000
    # the GUI run alone (the Results panel's study filter) is a grid of its own
    alone = heatmap_data(results.rows(storage, ["runs"]), BOX, "alpha", "rank")
    assert list(alone.cells.values())[0].mean == 0.9 and not alone.left_out
