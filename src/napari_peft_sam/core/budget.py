"""The preflight: the memory a training run needs against the memory free.

``preflight`` runs before a model is loaded: it compares the estimate
(``core.footprint``) with the memory the machine has free and turns on the
cheapest memory saving that fits (``TrainConfig.memory_saving``), or refuses
with one sentence naming the setting to change.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field

from .errors import UserError
from .footprint import (  # noqa: F401  (re-exported: the widget and benches ask here)
    CPU_BASE_MB,
    CUDA_CONTEXT_MB,
    LEVELS,
    OBJECT_CHUNK,
    counts_for,
    estimate_parts,
    estimate_peak_mb,
    estimate_training_memory,
)
from .knobs import set_hint

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
HEADROOM = 0.9  # share of the free memory a run may plan to use
COMFORT = 0.5  # share "auto" prefers to stay under when a saving level allows
# On a CPU "auto" skips "off" when chunked attention needs less than this share
# of it: vit_b at 1024 px in bf16 held 3.4 instead of 15.3 GB for about 6 %
# more time per step (the chunks' recomputation).
WORTH_SAVING = 0.5


def return_freed_memory() -> None:
    """Let glibc hand freed tensors back to the system (CPU training, Linux).

    glibc serves allocations under its mmap threshold from heap arenas and,
    after the first large free, raises that threshold to 32 MB, so the few-MB
    activations of a training step fragment the heap: peak RSS of vit_b at
    512 px was 3.1 GB against 2.5 GB with a fixed 1 MB threshold, at the same
    speed. Every tensor above 1 MB is then mapped on its own and unmapped
    when freed. Process-wide; a no-op where mallopt is missing (musl, macOS).
    """
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1 << 20)


@dataclass
class Plan:
    """What the preflight found: the estimate, the memory free, what to change."""

    estimate_mb: float
    available_mb: float | None
    changes: dict[str, object] = field(default_factory=dict)
    message: str | None = None


def available_mb(device) -> float | None:
    """Memory free for a run: MemAvailable on the CPU, free VRAM on CUDA; None if unknown."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20 - CUDA_CONTEXT_MB
    if device.type != "cpu":
        return None
    return system_available_mb()


def preflight(config, device, amp="auto", free_mb: float | None = None) -> Plan:
    """Check that ``config`` fits ``device`` before anything is loaded.

    With ``memory_saving`` auto the cheapest level that fits in half the free
    memory (else in 90 % of it) is chosen (on a CPU not ``off`` when
    ``chunks`` needs less than half of its memory: ``WORTH_SAVING``) and
    returned in ``Plan.changes`` (with a one-line message when it is not
    ``off``); a run that fits at no level, or not at the level the user
    forced, raises :class:`UserError` with one sentence naming the setting to
    change. ``amp`` is the autocast dtype (``"auto"``: ``autocast_for``);
    ``free_mb`` the memory free when measured already (``available_mb``).
    """
    import torch

    from .device import autocast_for
    from .models import architecture_of

    device = torch.device(device)
    cfg, size = config.train, config.model.image_size
    if amp == "auto":
        amp = autocast_for(device, config.model.name, cfg.precision, "train", size)
    arch = architecture_of(config.model.name)
    free = available_mb(device) if free_mb is None else free_mb
    bf16 = amp is not None
    levels = LEVELS if cfg.memory_saving == "auto" else (cfg.memory_saving,)
    needs = {
        level: estimate_peak_mb(arch, config.method, cfg, device, bf16, level, size)
        for level in levels
    }
    worth = len(levels) > 1 and needs["chunks"] < WORTH_SAVING * needs["off"]
    if device.type == "cpu" and worth:
        levels = levels[1:]  # a few % more time for a fraction of the memory
    if free is None:
        return _plan(cfg, levels[0], needs[levels[0]], free)
    # prefer a level that leaves half the free memory to napari and the rest
    # of the desktop; accept one that fits at all over refusing
    for share in (COMFORT, HEADROOM):
        for level in levels:
            if needs[level] <= share * free:
                return _plan(cfg, level, needs[level], free)
    raise UserError(_refusal(config, arch, device, bf16, needs[levels[-1]], free))


def _plan(cfg, level: str, need: float, free: float | None) -> Plan:
    changes = {"memory_saving": level} if cfg.memory_saving == "auto" else {}
    message = None
    if changes and level != "off":
        what = {
            "chunks": "attention in query chunks and objects in groups of "
            f"{OBJECT_CHUNK}",
            "checkpoint": "chunked attention and objects, and encoder blocks "
            "recomputed in backward",
        }[level]
        of = "" if free is None else f" of {free / 1024:.1f} GB free"
        message = (
            f"Memory: about {need / 1024:.1f} GB needed{of}; turned on memory "
            f"saving '{level}' ({what}; same results)."
        )
    return Plan(need, free, changes, message)


def _refusal(config, arch, device, bf16, need, free) -> str:
    """One sentence: what the run needs, what is free, which setting to change,
    named as the GUI's forms label it and as the CLI's flag."""
    cfg, size = config.train, config.model.image_size or arch.image_size
    where = "GPU memory" if device.type == "cuda" else "memory"
    saving = estimate_peak_mb(
        arch, config.method, cfg, device, bf16, "checkpoint", config.model.image_size
    )
    if cfg.memory_saving != "auto" and saving <= HEADROOM * free:
        fix = set_hint("memory_saving", "auto") + "; same results"
    else:
        fix = _smaller_setting(config, arch, device, bf16, free)
    return (
        f"Training {config.model.name} at {size} px with {cfg.n_objects} objects "
        f"needs about {need / 1024:.1f} GB but only {free / 1024:.1f} GB of "
        f"{where} is free; {fix}, or close other programs."
    )


def _smaller_setting(config, arch, device, bf16, free) -> str:
    """The first of fewer objects, then a smaller model input, that fits."""
    import dataclasses

    cfg, size = config.train, config.model.image_size or arch.image_size
    for n in (16, 8, 4, 2, 1):
        if n < cfg.n_objects:
            trial = dataclasses.replace(cfg, n_objects=n)
            need = estimate_peak_mb(
                arch, config.method, trial, device, bf16, "checkpoint", size
            )
            if need <= HEADROOM * free:
                return set_hint("n_objects", n)
    for smaller in (768, 512, 384, 256):
        if smaller < size:
            need = estimate_peak_mb(
                arch, config.method, cfg, device, bf16, "checkpoint", smaller
            )
            if need <= HEADROOM * free:
                return set_hint("image_size", smaller)
    return "use a smaller model or a machine with more memory"


def system_available_mb() -> float | None:
    """MemAvailable of this machine in MB, without importing torch (the GUI asks)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().available / 2**20


def check(config: dict, cpu_free_mb: float | None = None) -> dict:
    """The preflight of a run as plain data, for the GUI's memory line.

    ``config`` holds ``model``, ``method`` and the explicit ``train``
    settings (the rest comes from the model's recipe, as in a run);
    ``cpu_free_mb`` is the memory free as the GUI measured it, used when the
    run would train on the CPU. Returns ``device``, ``estimate_mb`` (at the
    memory saving the run would use; the most saving one when nothing fits),
    ``available_mb``, ``level``, ``message`` (a saving turned on) and
    ``refusal`` (the preflight's sentence, or None).
    """
    from .config import RunConfig
    from .device import resolve_device
    from .models import architecture_of
    from .recipes import resolve

    train, _ = resolve(config.get("train"), config["model"]["name"])
    run_config = RunConfig.from_dict({**config, "train": train.to_dict()})
    device = resolve_device(train.device)
    free = cpu_free_mb if device.type == "cpu" and cpu_free_mb else None
    report = {"device": device.type, "refusal": None, "message": None}
    try:
        plan = preflight(run_config, device, free_mb=free)
    except UserError as error:
        from .device import autocast_for

        cfg, size = run_config.train, run_config.model.image_size
        amp = autocast_for(device, run_config.model.name, cfg.precision, "train", size)
        level = "checkpoint" if cfg.memory_saving == "auto" else cfg.memory_saving
        arch = architecture_of(run_config.model.name)
        need = estimate_peak_mb(
            arch, run_config.method, cfg, device, amp is not None, level, size
        )
        free = free if free is not None else available_mb(device)
        return report | {
            "estimate_mb": need,
            "available_mb": free,
            "level": level,
            "refusal": str(error),
        }
    level = plan.changes.get("memory_saving", train.memory_saving)
    return report | {
        "estimate_mb": plan.estimate_mb,
        "available_mb": plan.available_mb,
        "level": level,
        "message": plan.message,
    }


def main(argv=None) -> None:
    """``python -m napari_peft_sam.core.budget CONFIG_JSON [CPU_FREE_MB]``: one
    line of JSON, :func:`check`'s report or ``{"error": sentence}``.

    The GUI runs this in a child process: the estimate builds the model on
    meta tensors, which needs torch and segment_anything (and so torchvision),
    none of which napari's process may import.
    """
    import sys

    argv = sys.argv[1:] if argv is None else argv
    free = float(argv[1]) if len(argv) > 1 and argv[1] != "none" else None
    try:
        report = check(json.loads(argv[0]), free)
    except UserError as error:
        report = {"error": str(error)}
    except Exception as error:  # shown in the GUI's memory line, not raised
        report = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
