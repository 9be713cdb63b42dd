"""The main job, offline: the demo sweep on the organoid sample data.

The shipped ``demo`` base model it starts from is pretrained on synthetic
fluorescence nuclei by ``python -m napari_peft_sam.core.pretrain``
(``core/pretrain.py``); its weights and card are ``assets/demo_sam.pt`` and
``assets/demo_sam.json``.
"""

from __future__ import annotations

from pathlib import Path


def run_demo(workdir: Path, log=print, spec=None) -> dict:
    """The main job, offline: the demo sweep on organoids plus the base-model row.

    ``spec`` replaces the ``demo`` preset (tests run the same path on ``tiny``).
    """
    from . import catalog, results
    from .errors import UserError
    from .evaluation import evaluate_model
    from .events import run_to_end
    from .executors import launch
    from .presets import preset
    from .runs import base_model_record
    from .splits import held_out
    from .store import add_record

    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise UserError(
            f"--workdir {workdir} is a file; pass a folder for the results."
        )
    storage = str(workdir / "results.journal")
    spec = spec or preset("demo")
    test_set = held_out(spec.run_config(spec.points()[0]))
    log(f"1/3 base model {spec.model!r} on {test_set.describe()}")
    base = run_to_end(
        evaluate_model(test_set, spec.metrics, model=spec.model, device="cpu")
    )
    reference = f"{spec.name}-reference"
    known = (workdir / "results.journal").exists() and any(
        r["study"] == reference for r in results.rows(storage)
    )
    if not known:
        record = base_model_record(
            spec.model,
            spec.dataset,
            base.metrics,
            {"source": test_set.source, "images": len(test_set)},
            params=dict.fromkeys(spec.param_names(), "base"),
        )
        add_record(storage, reference, record.attrs())
    n = len(spec.points())
    iterations = spec.run_config(spec.points()[0]).train.iterations
    log(f"2/3 LoRA sweep: {n} points (rank x alpha), {iterations} steps each")
    launch(spec, storage, workdir / "runs")
    table = results.rows(storage, [spec.name])
    log("3/3 results")
    heatmap, axes = None, list(dict.fromkeys(k for grid in spec.grid for k in grid))
    if len(axes) >= 2:  # the preset's rank x alpha; a one-axis spec has no grid
        heatmap = workdir / f"heatmap_{catalog.PRIMARY.replace(' ', '_')}.png"
        results.heatmap(table, catalog.PRIMARY, axes[0], axes[1], heatmap)
    return {
        "storage": storage,
        "base": base.metrics,
        "table": table,
        "heatmap": heatmap and str(heatmap),
    }
