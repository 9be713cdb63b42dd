"""Before -> after: each tuned run's base model, scored on the run's own test set.

A run is evaluated on its held-out set (``core.splits.held_out``); its
"before" is its base model (name, custom weights, image size) evaluated on
exactly those images with the same metrics. That evaluation runs once per
base model, test-set fingerprint and metrics, and is kept as JSON under
``home/baselines/``, so a sweep of sixteen runs on one dataset costs one
evaluation, and a restart none. Metrics only a trained decoder can compute
(ais) have no "before".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from . import catalog
from .files import atomic_write_json
from .runfolder import CARD, read_card

FOLDER = "baselines"
_KEYS: dict[str, str] = {}  # a test set's description -> its cache key, per process


def _metrics(row: dict) -> list[str]:
    names = [n for n in row.get("metrics") or {} if n in catalog.NAMES]
    return catalog.ordered(n for n in names if not catalog.get(n).needs_decoder)


def _test_set(row: dict, card: dict):
    """The run's RunConfig and the images it was evaluated on."""
    from .config import RunConfig
    from .data import Dataset
    from .splits import held_out

    config = RunConfig.from_dict(card.get("run_config") or {})
    test_set = held_out(config)
    images = (row.get("evaluated_on") or {}).get("images")
    if isinstance(images, int) and 0 < images < len(test_set):  # a sweep's eval_images
        test_set = Dataset(list(test_set)[:images], test_set.source)
    return config, test_set


def _describe(row: dict, card: dict, metrics: list[str]) -> str:
    """What decides the base model's numbers, as read from the card (no pixels)."""
    run_config = card.get("run_config") or {}
    return json.dumps(
        [
            run_config.get("data"),
            run_config.get("model"),
            (card.get("base_model") or {}).get("hash"),
            (row.get("evaluated_on") or {}).get("images"),
            metrics,
        ],
        sort_keys=True,
        default=str,
    )


def cache_key(model: dict, base_hash: str | None, fingerprint: str, metrics) -> str:
    """The cache file's name: base model + test-set fingerprint + metrics."""
    text = json.dumps([model, base_hash, fingerprint, list(metrics)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def tuned(row: dict) -> bool:
    """A run that has a before: trained, complete, with its folder here."""
    return (
        row.get("status") == "complete"
        and row.get("method") not in (None, "none")
        and bool(row.get("run_dir"))
        and (Path(row["run_dir"]) / CARD).is_file()
        and bool(_metrics(row))
    )


def before_scores(
    rows: list[dict],
    home: str | Path,
    evaluate: Callable | None = None,
    stop=None,
) -> Generator[Any, None, dict[str, dict[str, float | None]]]:
    """``{run_dir: base model's metrics}`` for every tuned row (see the module).

    Evaluates each base model and test set not in ``home/baselines`` once,
    yielding its events; ``evaluate`` replaces ``evaluation.evaluate_model``
    (tests count its calls). A row whose card or data cannot be read has no
    before (left out, never an error).
    """
    if evaluate is None:
        from .evaluation import evaluate_model as evaluate
    folder = Path(home) / FOLDER
    out: dict[str, dict] = {}
    for row in filter(tuned, rows):
        if stop is not None and stop.is_set():
            break
        metrics = _metrics(row)
        try:
            card = read_card(row["run_dir"])
            scores = yield from _scores(row, card, metrics, folder, evaluate)
        except (OSError, ValueError, KeyError):  # UserError is a ValueError
            continue  # a damaged card, data since moved: no before, no failure
        out[row["run_dir"]] = {m: scores.get(m) for m in metrics}
    return out


def _scores(row: dict, card: dict, metrics: list[str], folder: Path, evaluate):
    described = _describe(row, card, metrics)
    key = _KEYS.get(described)
    if key is not None and (folder / f"{key}.json").is_file():
        return json.loads((folder / f"{key}.json").read_text())["metrics"]
    from .splits import fingerprint

    config, test_set = _test_set(row, card)
    model = vars(config.model)
    key = cache_key(
        model,
        (card.get("base_model") or {}).get("hash"),
        fingerprint(test_set),
        metrics,
    )
    _KEYS[described] = key
    path = folder / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())["metrics"]
    result = yield from evaluate(
        test_set,
        metrics,
        model=config.model.name,
        checkpoint=config.model.checkpoint,
        image_size=config.model.image_size,
        device=config.train.device,
    )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        path,
        {
            "model": model,
            "evaluated_on": {"source": test_set.source, "images": len(test_set)},
            "metrics": result.metrics,
        },
    )
    return result.metrics
