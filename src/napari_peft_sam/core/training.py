"""The training run: a generator of events with cooperative stop and exact resume.

``train(config, run_dir)`` yields StepEvent / ValidationEvent / CheckpointEvent
and returns a TrainResult. Every event is also appended to
``run_dir/events.jsonl``. A stop token checked before every step ends the run
with a consistent checkpoint. ``resume=True`` continues from
``adapter_latest.pt`` + ``state.pt`` (optimizer, schedule, every random
generator), so on the CPU a resumed run reproduces an uninterrupted one.
The steps themselves are :class:`~.trainer.Trainer`'s (``core.trainer``).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Generator
from dataclasses import asdict
from pathlib import Path

import torch

from . import checkpoints as ckpt
from .config import RunConfig
from .data import Dataset
from .errors import UserError
from .events import (
    CheckpointEvent,
    Event,
    ProgressEvent,
    StepEvent,
    StopFlag,
    TrainResult,
    ValidationEvent,
)
from .knobs import flag, label, set_hint
from .methods import trainable_state
from .runfolder import RunFolder, read_card, update_card
from .splits import fingerprint, image_hashes
from .trainer import Trainer, TrainingError

STATE = "state.pt"
EVENTS = "events.jsonl"


def _save(trainer: Trainer, tag: str) -> Path:
    try:
        if trainer.unetr is not None:
            from .decoder import decoder_path, decoder_state

            ckpt.save_tensors(
                decoder_path(trainer.run_dir, tag), decoder_state(trainer.unetr)
            )
        path = ckpt.save_tensors(
            ckpt.adapter_path(trainer.run_dir, tag), trainable_state(trainer.model)
        )
        if tag == "latest":
            ckpt.atomic_write(
                trainer.run_dir / STATE, lambda f: torch.save(trainer.state_dict(), f)
            )
    except OSError as error:
        raise TrainingError(
            f"Saving the checkpoint failed ({error.strerror or error}); free disk space "
            "and resume (the previous checkpoint is intact)."
        ) from None
    return path


def _peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_card(trainer: Trainer, status: str, **extra) -> None:
    """Merge the run's current state into its card (evaluations are kept)."""
    fresh = ckpt.make_card(
        trainer.info,
        trainer.config.method,
        trainer.model,
        run_config=trainer.config.to_dict(),
        command=trainer.config.command(trainer.run_dir),
        status=status,
        steps=trainer.step,
        data={
            "source": trainer.train_set.source,
            "train_images": len(trainer.train_set),
            "val_images": len(trainer.val_set),
            "fingerprint": trainer.fingerprint,
            "train_hashes": trainer.train_hashes,
        },
        **extra,
    )

    def merge(card: dict) -> None:
        created = card.get("created")
        card.update(fresh)
        if created:  # a resumed run keeps its birth date
            card["created"] = created

    update_card(trainer.run_dir, merge)


# Settings a resume may change: how the run executes, not what it learns
# (``memory_saving`` auto is recorded resolved, so it reads as changed).
RESUMABLE = {
    "device",
    "precision",
    "iterations",
    "compile",
    "fast_path",
    "memory_saving",
}


def check_resume(
    config: RunConfig, run_dir: Path, allow_changes: bool = False, also=()
) -> None:
    """Refuse to resume with other settings than the run was started with
    (``also``: further setting names the caller has checked itself)."""
    if allow_changes:
        return
    started = read_card(run_dir).get("run_config") or {}
    now = config.to_dict()
    ignore = RESUMABLE | set(also)
    changed = [
        f"{part}.{name}"
        for part in ("data", "model", "method", "train")
        for name in sorted(set(now[part]) | set(started.get(part, {})))
        if name not in ignore and now[part].get(name) != started.get(part, {}).get(name)
    ]
    if changed:
        raise UserError(
            f"Resuming {run_dir} with other settings than it was started with "
            f"({', '.join(changed[:3])}); drop them, or pass --allow-changes."
        )


def train(
    config: RunConfig,
    run_dir: str | Path,
    stop: StopFlag | None = None,
    resume: bool = False,
    dataset: Dataset | None = None,
    folder: RunFolder | None = None,
    allow_changes: bool = False,
) -> Generator[Event, None, TrainResult]:
    """Train ``config`` into ``run_dir``; yields events, returns a TrainResult.

    The run owns ``run_dir`` while it trains (``folder``: already held by the
    caller). A new run needs a new or empty folder; ``resume`` continues from
    the last checkpoint, or starts over when the run ended before its first.
    However the run ends (finished, stopped, a failure), its card says how.
    """
    run_dir = Path(run_dir)
    if folder is None:
        with RunFolder(run_dir, resume) as held:
            return (
                yield from train(
                    config, run_dir, stop, resume, dataset, held, allow_changes
                )
            )
    if resume:
        check_resume(config, run_dir, allow_changes)
    trainer = Trainer(config, run_dir, dataset)
    trainer.fingerprint = fingerprint(trainer.train_set)
    trainer.train_hashes = image_hashes(trainer.train_set)
    if resume and (run_dir / STATE).exists():
        _restore(trainer, run_dir)
    elif config.init_from:
        _warm_start(trainer, Path(config.init_from))
    try:
        log = open(run_dir / EVENTS, "a")  # noqa: SIM115  (closed in finally)
    except OSError as error:
        raise TrainingError(
            f"Cannot write {run_dir / EVENTS} ({error.strerror})."
        ) from None
    message = getattr(trainer, "preflight_message", None)
    _write_card(trainer, "running", preflight=message)
    if message:  # the memory saving turned on, for the CLI and the GUI to say
        yield ProgressEvent(0, config.train.iterations, message)
    try:
        return (yield from _loop(trainer, stop, log))
    except BaseException as error:
        reason = f"failed: {error}"
        if isinstance(error, (KeyboardInterrupt, GeneratorExit)):
            # a Ctrl-C after a first signal: the record names the first one
            first = getattr(stop, "reason", None)
            reason = f"{first}, then interrupted" if first else "interrupted"
        with contextlib.suppress(Exception):
            _write_card(trainer, reason.splitlines()[0][:300])
        raise
    finally:
        log.close()


def _warm_start(trainer: Trainer, source: Path) -> None:
    """Start from another run's adapter (and AIS decoder): the annotate-retrain loop."""
    card = read_card(source)
    if card["base_model"].get("hash") != trainer.info.hash:
        raise UserError(
            f"--init-from {source} was trained on another base model "
            f"({card['base_model']['name']}); use the same --model and weights."
        )
    ckpt.load_adapter_into(trainer.model, ckpt.adapter_path(source, "best"))
    if trainer.unetr is not None:
        from .decoder import decoder_path

        path = decoder_path(source, "best")
        if path.exists():
            state = ckpt.load_tensors(path)
            trainer.unetr.load_state_dict(state, strict=False)


def _restore(trainer: Trainer, run_dir: Path) -> None:
    ckpt.load_adapter_into(trainer.model, ckpt.adapter_path(run_dir, "latest"))
    if trainer.unetr is not None:
        from .decoder import decoder_path

        state = ckpt.load_tensors(decoder_path(run_dir, "latest"))
        trainer.unetr.load_state_dict(state, strict=False)
    try:
        trainer.load_state_dict(torch.load(run_dir / STATE, weights_only=True))
    except Exception as error:  # truncated, not a checkpoint, or from another run
        raise UserError(
            f"{run_dir / STATE} cannot be read ({type(error).__name__}); start a new "
            "run, or resume from a copy of the folder with an intact state.pt."
        ) from None
    for group in trainer.optimizer.param_groups:
        for param in group["params"]:
            moments = trainer.optimizer.state.get(param, {}).get("exp_avg")
            if moments is not None and moments.shape != param.shape:
                raise UserError(
                    f"{run_dir / STATE} belongs to another run (its optimizer state "
                    f"has shape {tuple(moments.shape)} for a tensor of shape "
                    f"{tuple(param.shape)}); put back this run's state.pt or start "
                    "a new run."
                )


def _loop(trainer: Trainer, stop, log) -> Generator[Event, None, TrainResult]:
    def emit(event):
        try:
            log.write(json.dumps(asdict(event)) + "\n")
            log.flush()
        except OSError as error:
            raise TrainingError(
                f"Writing the event log failed ({error.strerror or error}); free disk "
                "space and resume (the last checkpoint is intact)."
            ) from None
        return event

    cfg, started = trainer.cfg, time.perf_counter()
    total, run_dir = cfg.iterations, trainer.run_dir
    first_step, stopped, reason, bad_rounds = trainer.step, False, "finished", 0
    while trainer.step < total:
        if stop is not None and stop.is_set():
            stopped, reason = True, getattr(stop, "reason", None) or "stopped"
            break
        loss, mask, iou = _guard(trainer.train_step)
        done = trainer.step - first_step
        rate = done / max(time.perf_counter() - started, 1e-9)
        yield emit(
            StepEvent(
                trainer.step,
                total,
                loss,
                mask,
                iou,
                trainer.optimizer.param_groups[0]["lr"],
                rate,
                (total - trainer.step) / max(rate, 1e-9),
            )
        )
        if trainer.step % cfg.val_interval == 0 or trainer.step == total:
            metrics = trainer.validate()
            trainer.schedule.observe(metrics["val_loss"])
            improved = metrics["val_loss"] < trainer.best
            if improved:
                trainer.best, bad_rounds = metrics["val_loss"], 0
                yield emit(
                    CheckpointEvent(trainer.step, str(_save(trainer, "best")), "best")
                )
            else:
                bad_rounds += 1
            yield emit(ValidationEvent(trainer.step, metrics, improved))
            if cfg.early_stopping and bad_rounds >= cfg.early_stopping:
                reason = "early stopping"
                break
        if trainer.step % cfg.checkpoint_interval == 0:
            yield emit(
                CheckpointEvent(trainer.step, str(_save(trainer, "latest")), "latest")
            )
    if trainer.step % cfg.checkpoint_interval or trainer.step == first_step:
        yield emit(
            CheckpointEvent(trainer.step, str(_save(trainer, "latest")), "latest")
        )
    if not ckpt.adapter_path(run_dir, "best").exists():
        _save(trainer, "best")
    result = TrainResult(
        str(run_dir),
        trainer.step,
        stopped,
        None if math.isinf(trainer.best) else trainer.best,
        time.perf_counter() - started,
        _peak_memory_mb(trainer.device),
        reason,
    )
    _write_card(
        trainer,
        reason,
        train_time_s=result.train_time_s,
        peak_memory_mb=result.peak_memory_mb,
        best_val_loss=result.best_metric,
    )
    emit(result)
    return result


def _guard(step):
    """Run one step, turning out-of-memory into one actionable sentence."""
    try:
        return step()
    except torch.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise TrainingError(
            f"The GPU ran out of memory; lower {label('n_objects')} "
            f"({flag('n_objects')}) or {label('patch_size')} ({flag('patch_size')}), "
            f"{set_hint('memory_saving', 'checkpoint')} for the same results more "
            "slowly, or use QLoRA (the last checkpoint is kept)."
        ) from None
