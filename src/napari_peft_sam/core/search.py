"""Search mode: a model-based search over a sweep's grid values, stopping weak
runs early, within a budget of training iterations.

- Sampler: Optuna's TPE over the grid's values (each axis categorical).
- Early stopping: Optuna's successive-halving pruner on an intermediate value
  reported at rungs of ``val_interval`` steps (never at the last step, so a
  run that got that far is always evaluated). The intermediate value is, by
  default, the negative validation box loss the run computes anyway
  (``signal="val_loss"``); ``signal="msa"`` measures the sweep's primary
  metric on the validation images with the run's latest checkpoint instead.
  On the demo grid (16 points x 3 seeds, ``benchmarks/bench_sweep.py``) the
  loss ranked the points' final mSA better at every rung (Spearman 0.94 at
  50 steps against 0.66 for mSA) and costs nothing.
- Repeats: the k-th visit of a point trains with seed k, up to ``repeats``
  visits (the spec's ``seeds``); the search's answer is the point with the
  highest mean over its finished visits, not one lucky run.
- Budget: with ``max_iterations`` no trial starts that could take the total
  past it.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

from .records import point_key
from .sweep import SweepSpec, check_reuse, claim
from .worker import _execute, run_point

SIGNALS = ("msa", "val_loss")
# answers from memory in a row after which the search has nothing left to learn
IDLE_LIMIT = 50


def rung_interval(spec: SweepSpec, signal: str) -> int:
    """Steps between two intermediate values (a model is saved at each for msa)."""
    train = spec.run_config(spec.points()[0]).train
    if signal == "msa":
        return math.lcm(train.val_interval, train.checkpoint_interval)
    return train.val_interval


def quick_msa(spec: SweepSpec, run_dir, images, tag: str = "latest") -> float:
    """``spec.primary`` of the run's ``tag`` checkpoint on ``images`` (no card change)."""
    from .checkpoints import load_run
    from .decoder import load_adapter_decoder
    from .evaluation import evaluate
    from .events import run_to_end
    from .inference import Segmenter

    sam, _ = load_run(run_dir, tag)
    decoder = load_adapter_decoder(run_dir, sam, tag)
    result = run_to_end(
        evaluate(Segmenter(sam), images, [spec.primary], decoder=decoder)
    )
    value = result.metrics.get(spec.primary)
    return float("nan") if value is None else float(value)


def validation_images(spec: SweepSpec, point: dict):
    """The validation images a point's intermediate mSA is measured on."""
    from .data import Dataset
    from .splits import train_val

    val = train_val(spec.run_config(point))[1]
    return Dataset(list(val)[: spec.eval_images or 4], val.source)


def run_point_reporting(
    spec: SweepSpec,
    point: dict,
    run_dir: Path,
    report=None,
    stop=None,
    on_event=None,
    signal: str = "val_loss",
):
    """``worker.run_point`` reporting ``signal`` at every rung (see the module)."""

    if signal == "val_loss" or report is None:
        return run_point(spec, point, run_dir, report, stop, on_event)
    train = spec.run_config(point).train
    every, images = rung_interval(spec, signal), None

    def observe(event):
        nonlocal images
        if on_event is not None:
            on_event(event)
        at_rung = event.kind == "checkpoint" and event.tag == "latest"
        if at_rung and event.step % every == 0 and event.step < train.iterations:
            images = images or validation_images(spec, point)
            report(quick_msa(spec, run_dir, images), event.step)

    return run_point(spec, point, run_dir, None, stop, observe)


def _visits(study, params: dict) -> list:
    """Earlier trials of the search that trained ``params`` (any seed)."""
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if not t.user_attrs.get("duplicate") and _without_seed(t) == params
    ]


def _without_seed(trial) -> dict:
    return {
        k: v for k, v in (trial.user_attrs.get("values") or {}).items() if k != "seed"
    }


def iterations_used(study) -> int:
    """Training iterations the search's trials ran (pruned ones up to their stop)."""
    return sum(int(t.user_attrs.get("iterations") or 0) for t in study.trials)


def best_point(study) -> tuple[dict[str, Any] | None, float | None, int]:
    """The searched point with the highest mean over its finished visits."""
    from optuna.trial import TrialState as S

    values: dict[str, list] = {}
    params: dict[str, dict] = {}
    for t in study.get_trials(deepcopy=False, states=(S.COMPLETE,)):
        if t.user_attrs.get("duplicate") or t.value is None:
            continue
        point = _without_seed(t)
        values.setdefault(point_key(point), []).append(t.value)
        params[point_key(point)] = point
    if not values:
        return None, None, 0
    key = max(values, key=lambda k: sum(values[k]) / len(values[k]))
    return params[key], sum(values[key]) / len(values[key]), len(values[key])


def run_search(
    storage: str,
    spec: SweepSpec,
    n_trials: int,
    runs_root: str | Path,
    runner=None,
    seed: int = 0,
    signal: str = "val_loss",
    max_iterations: int | None = None,
    name: str | None = None,
    reduction_factor: int = 2,
    sampler=None,
    pruner=None,
):
    """A TPE search with successive halving over ``spec``'s grid values.

    ``n_trials`` counts trained trials (a point asked for again after
    ``repeats`` visits is answered from memory and costs nothing).
    ``sampler`` and ``pruner`` replace TPE and successive halving (other
    Optuna samplers and pruners, for comparisons). Returns the Optuna study (its trials hold the rows). ``runner`` replaces
    the training (tests, replays); it receives ``report(value, step)``.
    """
    import optuna
    from optuna.trial import TrialState as S

    from .errors import UserError
    from .store import open_storage, open_study, redact

    if signal not in SIGNALS:
        raise UserError(f"Unknown search signal {signal!r}; choose {SIGNALS}.")
    runner = runner or partial(run_point_reporting, signal=signal)
    space = "-".join(f"{n}{len(spec.choices(n))}" for n in spec.param_names())
    name = name or f"{spec.name}-search-{space}"
    total = spec.run_config(spec.points()[0]).train.iterations
    check_reuse(storage, name, spec)
    study = open_study(
        open_storage(storage, write=True),
        name,
        create=True,
        sampler=sampler
        or optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=max(2, min(n_trials // 4, 8))
        ),
        pruner=pruner
        or optuna.pruners.SuccessiveHalvingPruner(
            min_resource=rung_interval(spec, signal),
            reduction_factor=reduction_factor,
        ),
    )
    claim(study, spec, redact(storage))
    repeats, root = max(1, spec.seeds), Path(runs_root) / name

    def objective(trial):
        params = {
            n: trial.suggest_categorical(n, spec.choices(n)) for n in spec.param_names()
        }
        done = _visits(study, params)
        if len(done) >= repeats:  # seen enough: answer from memory, train nothing
            trial.set_user_attr("duplicate", True)
            finished = [t.value for t in done if t.state == S.COMPLETE]
            if not finished:
                raise optuna.TrialPruned("every visit was stopped early")
            return sum(finished) / len(finished)
        point = params | ({"seed": len(done)} if repeats > 1 else {})
        trial.set_user_attr("values", point)
        trial.set_user_attr("point", point_key(point))

        def report(value, step):
            trial.report(value, step)
            trial.set_user_attr("iterations", step)
            if step < total and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        return _execute(study, trial, spec, root, runner, report)

    def enough(study, _trial):
        trials = study.get_trials(deepcopy=False)
        trained = [t for t in trials if not t.user_attrs.get("duplicate")]
        idle = len(trials) - 1 - max((t.number for t in trained), default=-1)
        over = max_iterations is not None and (
            iterations_used(study) + total > max_iterations
        )
        if len(trained) >= n_trials or over or idle >= IDLE_LIMIT:
            study.stop()

    if max_iterations is not None and max_iterations < total:
        raise UserError(
            f"A search budget of {max_iterations} iterations is less than one run ({total})."
        )
    study.optimize(
        objective,
        catch=(RuntimeError, UserError),
        callbacks=[enough],
    )
    return study
