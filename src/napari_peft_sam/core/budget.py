"""The memory a training run needs, from shapes alone, and the preflight that checks it.

``estimate_peak_mb`` adds up what a training step of ``core.training`` holds
at its peak: the process itself (on the CPU), the weights, gradients and
AdamW state, the activations the image encoder saves for backward, and one
decoder pass (the passes are back-propagated one at a time). The
coefficients below were measured with saved-tensor hooks on vit_b and demo at
256 and 512 px and checked against peak RSS and peak CUDA memory
(``benchmarks/bench_train.py --memory``).

``preflight`` runs before a model is loaded: it compares the estimate with
the memory the machine has free and turns on the cheapest memory saving that
fits (``TrainConfig.memory_saving``), or refuses with one sentence naming the
setting to change.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from dataclasses import dataclass, field

from .errors import UserError
from .knobs import set_hint

OBJECT_CHUNK = 8  # objects decoded at once when memory saving is on
LEAN_ELEMENTS = 2**24  # as core.fastpath: scores per lean attention chunk
LEVELS = ("off", "chunks", "checkpoint")
CUDA_CONTEXT_MB = 500  # CUDA context, cuBLAS/cuDNN workspaces (not "allocated")
# resident before the model: Python, torch, micro_sam, data (measured)
CPU_BASE_MB = 900
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
HEADROOM = 0.9  # share of the free memory a run may plan to use
COMFORT = 0.5  # share "auto" prefers to stay under when a saving level allows
# Encoder activations saved per token, in float32 channels: the norms, the MLP
# and the LoRA path (6 per token) and the qkv of every attended token (3,
# padding of windowed blocks included). bfloat16 autocast saves about the same:
# the residual stream and the norms stay float32 and the casts are saved too.
ENCODER_CHANNELS_PER_TOKEN = 6
ENCODER_CHANNELS_PER_ATTENDED = 3
# A decoder pass saves per object and model-input pixel about 8 + 0.4 x the
# prompt dimension bytes (float32); bf16 autocast about 0.7 of that.
DECODER_BYTES_PER_PIXEL = (8.0, 0.4)
DECODER_BF16 = 0.7
DECODER_BACKWARD = 2.0  # the backward of a pass holds its gradients beside it


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


@functools.lru_cache(maxsize=32)
def _counts(arch_name: str, method_json: str, image_size: int) -> dict[str, int]:
    """Parameter counts of the model with its method applied (meta tensors: instant)."""
    import torch

    from .methods import apply_method, config_from_dict
    from .models import architecture_of, build_sam

    with torch.device("meta"):
        sam = build_sam(architecture_of(arch_name), image_size)
        apply_method(sam, config_from_dict(json.loads(method_json)))
    blocks = list(sam.image_encoder.blocks)
    trainable = [any(p.requires_grad for p in b.parameters()) for b in blocks]
    encoder = sam.image_encoder
    return {
        "total": sum(p.numel() for p in sam.parameters()),
        "trainable": sum(p.numel() for p in sam.parameters() if p.requires_grad),
        "encoder": sum(p.numel() for p in encoder.parameters()),
        "first_trainable_block": trainable.index(True) if any(trainable) else -1,
        "encoder_trains": int(any(p.requires_grad for p in encoder.parameters())),
    }


def counts_for(arch, method_cfg, image_size: int | None = None) -> dict[str, int]:
    """Parameter counts for ``arch`` with ``method_cfg`` applied."""
    method_json = json.dumps(method_cfg.to_dict(), sort_keys=True, default=str)
    return _counts(arch.name, method_json, image_size or arch.image_size)


def effective(level: str, train_cfg) -> tuple[bool, bool, int | None]:
    """(lean attention, checkpointed blocks, object chunk) of a memory-saving level."""
    lean = level in ("chunks", "checkpoint") and train_cfg.fast_path
    blocks = level == "checkpoint" or train_cfg.grad_checkpointing
    chunk = OBJECT_CHUNK if level in ("chunks", "checkpoint") else None
    return lean, blocks, chunk


def _encoder_mb(arch, size: int, batch: int, lean: bool, blocks: bool, first: int):
    """(saved activations, largest transient) of the encoder, in MB."""
    grid, c, ws = size // arch.patch_size, arch.embed_dim, arch.window_size
    tokens = grid * grid
    windows = math.ceil(grid / ws) ** 2
    saved, transient = 0.0, 0.0
    for i in range(max(first, 0), arch.depth):
        is_global = i in arch.global_attn
        attended = tokens if is_global else windows * ws * ws
        block = 4 * c * ENCODER_CHANNELS_PER_TOKEN * tokens
        block += 4 * c * ENCODER_CHANNELS_PER_ATTENDED * attended
        scores = arch.num_heads * (tokens**2 if is_global else windows * ws**4)
        if lean:
            transient = max(transient, 5 * 4 * min(scores, LEAN_ELEMENTS))
        else:
            block += 4 * scores  # the softmax, saved for backward
            transient = max(transient, 3 * 4 * scores)  # scores, mask, softmax
        if blocks:  # blocks keep their input; backward rebuilds one at a time
            transient = max(transient, block)
            block = 4 * c * tokens
        saved += block
    return batch * saved / 2**20, batch * transient / 2**20


def estimate_parts(
    arch, method_cfg, train_cfg, device, bf16: bool, level: str, image_size=None
) -> dict[str, float]:
    """The estimate's terms in MB (``estimate_peak_mb`` adds them up)."""
    size = image_size or arch.image_size
    counts = counts_for(arch, method_cfg, size)
    cpu = getattr(device, "type", device) == "cpu"
    lean, blocks, chunk = effective(level, train_cfg)
    weights = 4 * counts["total"] + (2 * counts["encoder"] if bf16 else 0)
    parts = {
        "process": CPU_BASE_MB if cpu else 0.0,
        "weights": weights / 2**20,
        "optimizer": 12 * counts["trainable"] / 2**20,
    }
    encoder, transient = 0.0, 0.0
    if counts["encoder_trains"]:
        first = counts["first_trainable_block"]
        encoder, transient = _encoder_mb(
            arch, size, train_cfg.batch_size, lean, blocks, first
        )
    objects = min(train_cfg.n_objects, chunk or train_cfg.n_objects)
    a, b = DECODER_BYTES_PER_PIXEL
    decoder = objects * size * size * (a + b * arch.prompt_dim)
    decoder *= (DECODER_BF16 if bf16 else 1.0) * DECODER_BACKWARD
    parts["encoder activations"] = encoder
    parts["step peak"] = max(transient, decoder / 2**20)
    return parts


def estimate_peak_mb(
    arch,
    method_cfg,
    train_cfg,
    device,
    bf16: bool = False,
    level: str | None = None,
    image_size: int | None = None,
) -> float:
    """Peak memory in MB of a training step: resident (CPU) or allocated (CUDA).

    Parameters
    ----------
    arch
        The model's :class:`~napari_peft_sam.core.models.Architecture`.
    method_cfg
        The PEFT method's config.
    train_cfg
        The :class:`~napari_peft_sam.core.config.TrainConfig`.
    device
        ``torch.device`` or ``"cpu"`` / ``"cuda"``.
    bf16
        Whether the step runs under bfloat16 autocast.
    level
        Memory saving (``off``, ``chunks``, ``checkpoint``); default: the
        config's, ``auto`` counting as ``off``.
    image_size
        The model's input size, when not the architecture's.
    """
    level = level or getattr(train_cfg, "memory_saving", "auto")
    level = "off" if level == "auto" else level
    parts = estimate_parts(arch, method_cfg, train_cfg, device, bf16, level, image_size)
    return sum(parts.values())


def estimate_training_memory(arch, sam, cfg, method_cfg=None) -> float:
    """Megabytes a training step needs on a GPU, CUDA context included (Model widget).

    ``sam`` is not read (kept for the widget's call); pass ``method_cfg`` for
    the method's own parameter counts (LoRA's otherwise).
    """
    from .methods import make_config

    bf16 = cfg.precision != "float32"
    method = method_cfg or make_config("lora")
    return CUDA_CONTEXT_MB + estimate_peak_mb(arch, method, cfg, "cuda", bf16)


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
    memory (else in 90 % of it) is chosen and
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
        message = (
            f"Memory: about {need / 1024:.1f} GB needed of {free / 1024:.1f} GB "
            f"free; turned on memory saving '{level}' ({what}; same results)."
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
