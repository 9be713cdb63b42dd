"""One source of truth per fact: metric names live in the catalog only."""

from __future__ import annotations

import ast
from pathlib import Path

import napari_peft_sam
from napari_peft_sam.core import catalog

PACKAGE = Path(napari_peft_sam.__file__).parent


def test_metric_names_are_spelled_in_the_catalog_only():
    names = set(catalog.NAMES)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "catalog.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(
                    f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}"
                )
    assert not found, found


def test_core_reads_top_down():
    """Foundations never import the layers above them (docs/architecture.md)."""
    foundations = ["config", "knobs", "recipes", "catalog", "records", "store",
                   "runfolder", "events", "errors", "files", "requests"]  # fmt: skip
    above = {"runs", "sweep", "worker", "executors", "training", "trainer",
             "evaluation", "service", "service_ops", "service_models",
             "service_runs", "demo", "pretrain", "export", "results",
             "inference", "search", "annotations", "retrain"}  # fmt: skip
    for name in foundations:
        tree = ast.parse((PACKAGE / "core" / f"{name}.py").read_text())
        imported = {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1
        }
        assert not imported & above, (name, imported & above)
