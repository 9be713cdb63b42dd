"""The Results panel on a store with repeated seeds: one row per point with
mean ± interval and n, and a heatmap that leaves out runs of other settings."""

from __future__ import annotations

import pytest

from napari_peft_sam.core import catalog
from napari_peft_sam.core.records import RunRecord
from napari_peft_sam.core.store import add_record

from .conftest import wait_until

pytestmark = pytest.mark.qt
BOX = catalog.SINGLE_BOX.name
SCORES = {1: [0.10, 0.12, 0.11], 2: [0.20, 0.28, 0.16], 4: [0.22, 0.26, 0.24]}


def record(params, score, iterations=80, seed=0):
    return RunRecord(
        run_dir=None,
        dataset="organoids",
        model="demo",
        method="lora",
        params=params,
        settings={"iterations": iterations, "seed": seed},
        metrics={BOX: score},
        iterations=iterations,
    ).attrs()


def fill(storage: str) -> None:
    for rank, scores in SCORES.items():
        for seed, score in enumerate(scores):
            params = {"rank": rank, "alpha": 1, "seed": seed}
            add_record(storage, "seeded", record(params, score, seed=seed))
    add_record(storage, "runs", record({"rank": 4, "alpha": 1}, 0.9, iterations=300))


def test_results_panel_groups_seeds_and_keeps_heatmaps_like_with_like(docked, qtbot):
    _, widgets = docked
    results = widgets["Results"]
    fill(results.session.storage)
    results.refresh()
    wait_until(qtbot, lambda: len(results.rows) == 10, 30)
    results.metric.setCurrentText(BOX)
    results.x_param.setCurrentText("alpha")
    results.y_param.setCurrentText("rank")
    assert results.group.isChecked() and results.table.rowCount() == 4  # 3 points + 1
    headers = [
        results.table.horizontalHeaderItem(j).text()
        for j in range(results.table.columnCount())
    ]
    box, n = headers.index(BOX), headers.index("n")
    by_rank = {}
    for i in range(results.table.rowCount()):
        row = results.row_at(i)
        if row["study"] == "seeded":
            by_rank[row["params"]["rank"]] = results.table.item(i, box)
            assert results.table.item(i, n).text() == "3"
    assert by_rank[4].text().startswith("0.240 ± ") and by_rank[4].font().bold()
    assert by_rank[2].text().endswith("≈") and not by_rank[1].text().endswith("≈")

    heat = results.heatmap
    means = {k: c.mean for k, c in heat.cells.items()}
    assert means == pytest.approx({(1, 1): 0.11, (1, 2): 0.64 / 3, (1, 4): 0.24})
    assert heat.cells[(1, 4)].mark == "best" and heat.cells[(1, 2)].mark == "tie"
    assert "1 run left out: other settings (iterations 300 vs 80)" in heat.notes
    results.table.grab()  # paints
    heat.grab()

    results.group.setChecked(False)  # every seed's run again
    assert results.table.rowCount() == 10
