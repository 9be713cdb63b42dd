"""The training engine: a generator of events with cooperative stop and exact resume.

``train(config, run_dir)`` yields StepEvent / ValidationEvent / CheckpointEvent
and returns a TrainResult. Every event is also appended to
``run_dir/events.jsonl``. A stop token checked before every step ends the run
with a consistent checkpoint. ``resume=True`` continues from
``adapter_latest.pt`` + ``state.pt`` (optimizer, schedule, every random
generator), so on the CPU a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Generator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from . import checkpoints as ckpt
from .budget import OBJECT_CHUNK, preflight
from .config import RunConfig
from .data import Dataset
from .device import autocast_for, resolve_device
from .errors import UserError
from .events import (
    CheckpointEvent,
    Event,
    StepEvent,
    StopFlag,
    TrainResult,
    ValidationEvent,
)
from .methods import apply_method, trainable_state
from .models import load_base_model
from .objective import encode, iterative_loss, to_model_input
from .patches import PatchSampler
from .runfolder import RunFolder, read_card, update_card
from .splits import fingerprint, image_hashes, train_val

STATE = "state.pt"
EVENTS = "events.jsonl"


class TrainingError(UserError):
    """Training cannot go on (out of memory, a diverging loss, a full disk)."""


class LRSchedule:
    """Linear warm-up, then ReduceLROnPlateau (as the study) or cosine decay."""

    def __init__(self, cfg, total: int) -> None:
        self.cfg, self.total = cfg, total
        self.plateau_scale, self.best, self.bad_rounds = 1.0, math.inf, 0

    def lr(self, step: int) -> float:
        cfg = self.cfg
        warm = min(1.0, step / cfg.warmup) if cfg.warmup else 1.0
        if cfg.scheduler == "cosine":
            span = max(1, self.total - cfg.warmup)
            progress = min(1.0, max(0, step - cfg.warmup) / span)
            return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))
        return cfg.lr * warm * self.plateau_scale

    def observe(self, metric: float) -> None:
        if self.cfg.scheduler != "plateau":
            return
        if metric < self.best:
            self.best, self.bad_rounds = metric, 0
        else:
            self.bad_rounds += 1
            if self.bad_rounds > self.cfg.plateau_patience:
                self.plateau_scale *= self.cfg.plateau_factor
                self.bad_rounds = 0

    def state_dict(self) -> dict:
        return {
            "plateau_scale": self.plateau_scale,
            "best": self.best,
            "bad_rounds": self.bad_rounds,
        }

    def load_state_dict(self, state: dict) -> None:
        self.plateau_scale, self.best = state["plateau_scale"], state["best"]
        self.bad_rounds = state["bad_rounds"]


class Trainer:
    """The state of one run: model, optimizer, data, generators."""

    def __init__(
        self, config: RunConfig, run_dir: Path, dataset: Dataset | None
    ) -> None:
        cfg = self.cfg = config.train
        self.config, self.run_dir = config, run_dir
        self.device = resolve_device(cfg.device)
        self.amp = autocast_for(
            self.device,
            config.model.name,
            cfg.precision,
            "train",
            config.model.image_size,
        )
        self.preflight_message = self._preflight()
        torch.manual_seed(cfg.seed)
        self.train_set, self.val_set = train_val(config, dataset)
        sam, self.info = load_base_model(
            config.model.name, config.model.checkpoint, config.model.image_size
        )
        self.model = apply_method(sam, config.method).to(self.device).train()
        lean = cfg.memory_saving in ("chunks", "checkpoint")
        self.object_chunk = OBJECT_CHUNK if lean else None
        self.block_checkpointing = (
            cfg.grad_checkpointing or cfg.memory_saving == "checkpoint"
        )
        if cfg.fast_path:
            from .fastpath import enable_fast_path

            enable_fast_path(self.model, lean=lean)
        if cfg.compile:
            self.model.image_encoder.compile()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.unetr = None
        if cfg.with_decoder:
            from .decoder import Targets, build_unetr, decoder_parameters

            self.unetr = build_unetr(self.model, device=self.device).train()
            self.targets = Targets()
            params += decoder_parameters(self.unetr)
        self.optimizer = torch.optim.AdamW(
            params,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            fused=self.device.type == "cuda",
        )
        self.schedule = LRSchedule(cfg, cfg.iterations)
        self.patch = cfg.patch_size or self.model.image_encoder.img_size
        self.sampler = PatchSampler(
            self.train_set, self.patch, cfg.min_objects, cfg.n_objects, seed=cfg.seed
        )
        self.gen = torch.Generator(self.device).manual_seed(cfg.seed)
        self.coin = torch.Generator().manual_seed(cfg.seed + 1)
        self.val_batches = self._validation_patches()
        self.step, self.best = 0, math.inf

    def _validation_patches(self):
        sampler = PatchSampler(
            self.val_set, self.patch, 1, self.cfg.n_objects, seed=12345
        )
        return [sampler.sample() for _ in range(self.cfg.val_patches)]

    def _batch(self):
        patches = [self.sampler.sample() for _ in range(self.cfg.batch_size)]
        images = torch.from_numpy(np.stack([p.image for p in patches])).to(self.device)
        labels = [torch.from_numpy(p.labels).to(self.device) for p in patches]
        return images, labels

    def _preflight(self) -> str | None:
        """Estimate peak memory; turn on what makes the run fit, or refuse (UserError)."""
        plan = preflight(self.config, self.device, self.amp)
        for name, value in plan.changes.items():
            setattr(self.cfg, name, value)  # the card records the effective value
        return plan.message

    def _loss(
        self,
        images,
        labels,
        use_box: bool,
        n_sub: int,
        mask_prob: float,
        backward: bool = False,
    ):
        """The objective's (loss, mask, iou) on a batch.

        With ``backward`` the gradients are computed too, one decoder pass at
        a time: the passes back-propagate into a detached copy of the image
        embeddings as they go, then the encoder's graph once (equal to one
        backward of the whole loss, with one pass's memory instead of all).
        """
        from .prompts import one_hot_objects

        with torch.autocast(
            self.device.type, dtype=self.amp, enabled=self.amp is not None
        ):
            embeddings = encode(
                self.model,
                to_model_input(self.model, images),
                self.block_checkpointing,
            )
        leaf = embeddings.detach().requires_grad_() if backward else embeddings
        parts = [
            iterative_loss(
                self.model,
                leaf[b : b + 1],
                one_hot_objects(labels[b], self.cfg.n_objects, self.coin),
                use_box,
                n_sub,
                mask_prob,
                self.cfg.box_distortion,
                self.gen,
                self.coin,
                amp=self.amp,
                backward_scale=1 / len(labels) if backward else None,
                object_chunk=self.object_chunk,
            )
            for b in range(len(labels))
        ]
        if backward and embeddings.requires_grad and leaf.grad is not None:
            embeddings.backward(leaf.grad)
        n = len(parts)
        return (
            sum(p.loss for p in parts) / n,
            sum(p.mask for p in parts) / n,
            sum(p.iou for p in parts) / n,
        )

    def train_step(self) -> tuple[float, float, float]:
        self.step += 1
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.lr(self.step)
        images, labels = self._batch()
        self.optimizer.zero_grad(set_to_none=True)
        loss, mask, iou = self._loss(
            images,
            labels,
            use_box=self.step % 2 == 0,
            n_sub=self.cfg.n_sub_iterations,
            mask_prob=self.cfg.mask_prob,
            backward=True,
        )
        values = (float(loss), float(mask), float(iou))
        if not math.isfinite(values[0]):
            raise TrainingError(
                f"The loss became {values[0]} at step {self.step}; lower the learning "
                "rate (the last good checkpoint is kept)."
            )
        self.optimizer.step()
        if self.unetr is not None:  # micro-sam's second step, on the AIS decoder
            self._decoder_step(images, labels)
        return values

    def _decoder_step(self, images, labels) -> None:
        from .decoder import unetr_loss

        targets = np.stack([self.targets(lab.cpu().numpy()) for lab in labels])
        targets = torch.from_numpy(targets).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            self.device.type, dtype=self.amp, enabled=self.amp is not None
        ):
            loss = unetr_loss(self.unetr, images, targets)
        loss.backward()
        self.optimizer.step()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Dice + IoU loss of single point and box prompts on fixed validation patches."""
        self.model.eval()
        gen = torch.Generator(self.device).manual_seed(0)
        coin = torch.Generator().manual_seed(0)
        totals = {"point": [], "box": []}
        try:
            for patch in self.val_batches:
                images = torch.from_numpy(patch.image[None]).to(self.device)
                labels = torch.from_numpy(patch.labels).to(self.device)
                ids = torch.arange(1, int(labels.max()) + 1, device=self.device)
                with torch.autocast(
                    self.device.type, dtype=self.amp, enabled=self.amp is not None
                ):  # one embedding serves both prompt kinds
                    emb = encode(self.model, to_model_input(self.model, images))
                for use_box, key in ((False, "point"), (True, "box")):
                    losses = iterative_loss(
                        self.model,
                        emb,
                        labels[None] == ids[:, None, None],
                        use_box,
                        1,
                        0.0,
                        0.0,
                        gen,
                        coin,
                        amp=self.amp,
                        object_chunk=self.object_chunk,
                    )
                    totals[key].append(float(losses.loss))
        finally:
            self.model.train()
        point, box = float(np.mean(totals["point"])), float(np.mean(totals["box"]))
        return {
            "val_loss": (point + box) / 2,
            "val_point_loss": point,
            "val_box_loss": box,
        }

    # -- checkpoint state -------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "best": self.best,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "gen": self.gen.get_state(),
            "coin": self.coin.get_state(),
            "sampler": json.dumps(self.sampler.rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step, self.best = state["step"], state["best"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        self.gen.set_state(state["gen"])
        self.coin.set_state(state["coin"])
        self.sampler.rng.bit_generator.state = json.loads(state["sampler"])


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


def _check_resume(config: RunConfig, run_dir: Path, allow_changes: bool) -> None:
    """Refuse to resume with other settings than the run was started with."""
    if allow_changes:
        return
    started = read_card(run_dir).get("run_config") or {}
    now = config.to_dict()
    ignore = {"device", "precision", "iterations", "compile", "fast_path"}
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
        _check_resume(config, run_dir, allow_changes)
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
    _write_card(
        trainer, "running", preflight=getattr(trainer, "preflight_message", None)
    )
    try:
        return (yield from _loop(trainer, stop, log))
    except BaseException as error:
        reason = (
            "interrupted"
            if isinstance(error, (KeyboardInterrupt, GeneratorExit))
            else f"failed: {error}"
        )
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
            state = torch.load(path, weights_only=True)
            trainer.unetr.load_state_dict(state, strict=False)


def _restore(trainer: Trainer, run_dir: Path) -> None:
    ckpt.load_adapter_into(trainer.model, ckpt.adapter_path(run_dir, "latest"))
    if trainer.unetr is not None:
        from .decoder import decoder_path

        state = torch.load(decoder_path(run_dir, "latest"), weights_only=True)
        trainer.unetr.load_state_dict(state, strict=False)
    try:
        trainer.load_state_dict(torch.load(run_dir / STATE, weights_only=True))
    except Exception as error:  # truncated, not a checkpoint, or from another run
        raise UserError(
            f"{run_dir / STATE} cannot be read ({type(error).__name__}); start a new "
            "run, or resume from a copy of the folder with an intact state.pt."
        ) from None


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
            "The GPU ran out of memory; use fewer objects per image (--n-objects), a "
            "smaller patch, --grad-checkpointing or QLoRA (the last checkpoint is kept)."
        ) from None
