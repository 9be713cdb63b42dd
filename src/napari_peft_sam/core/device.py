"""Devices and precision: which device a run uses and which autocast dtype.

Evaluation, prompting and training all resolve the user's ``--device`` and
``--precision`` here, so they agree. ``autocast_for`` chooses per machine and
model: bfloat16 autocast on CUDA where the card supports it; on the CPU,
float32 unless the processor computes bfloat16 natively (AVX512-BF16 or AMX)
*and* a short timing of one encoder block in both precisions shows bfloat16
faster. Without native support bfloat16 is emulated and tens of times slower;
with it, large GEMMs gain while small models lose to the casts. The timing
runs once per machine, torch version, model and purpose, and is cached in a
small JSON file (``~/.cache/napari-peft-sam/precision.json``; the folder can
be moved with ``NAPARI_PEFT_SAM_CACHE``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import torch

from .errors import UserError

CACHE_ENV = "NAPARI_PEFT_SAM_CACHE"
CACHE_FILE = "precision.json"
# bfloat16 must beat float32 by this factor: it also costs accuracy, so a tie
# (or timing noise) keeps float32
BF16_MARGIN = 0.9
# the timing runs one global-attention block at up to this many tokens (a
# 32 x 32 grid): big enough for GEMMs to dominate as in a real step, small
# enough for the whole timing to take a few seconds on two cores
MAX_TIMING_TOKENS = 1024
_decided: dict[str, dict] = {}  # this process's decisions, by cache key


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; CUDA without a GPU is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but no GPU is available; use --device cpu.")
    return torch.device(name)


def cpu_capabilities() -> dict:
    """The CPU's name and feature flags, as torch's cpuinfo reports them."""
    try:
        return dict(torch.cpu.get_capabilities())
    except (AttributeError, RuntimeError):  # older torch or an unknown platform
        return {"cpu_name": platform.processor() or platform.machine()}


def cpu_has_native_bf16(caps: dict | None = None) -> bool:
    """True when the CPU has bfloat16 dot products (AVX512-BF16 or AMX-BF16)."""
    caps = cpu_capabilities() if caps is None else caps
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def machine_summary() -> dict:
    """What benchmarks and the precision cache record about this machine."""
    caps = cpu_capabilities()
    return {
        "cpu": caps.get("cpu_name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "avx512_bf16": bool(caps.get("avx512_bf16")),
        "amx_bf16": bool(caps.get("amx_bf16")),
        "avx2": bool(caps.get("avx2")),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def machine_key() -> str:
    """A short hash of the CPU model, its feature flags and the torch version."""
    caps = cpu_capabilities()
    flags = sorted(k for k, v in caps.items() if v is True)
    text = json.dumps([caps.get("cpu_name"), flags, torch.__version__])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def cache_path() -> Path:
    """The precision cache file (``NAPARI_PEFT_SAM_CACHE`` moves its folder)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "napari-peft-sam"
    return Path(root) / CACHE_FILE


def autocast_for(
    device: torch.device | str,
    arch_name: str | None,
    precision: str = "auto",
    purpose: str = "train",
    image_size: int | None = None,
) -> torch.dtype | None:
    """The autocast dtype for ``arch_name`` on ``device``; None means float32.

    Parameters
    ----------
    device
        Where the model runs.
    arch_name
        A model or architecture name (``vit_b``, ``vit_b_lm``, ``demo``,
        ``tiny``); None skips the CPU timing (float32 on the CPU).
    precision
        ``auto`` chooses per machine; ``float32`` or ``bfloat16`` force one.
    purpose
        ``train`` times forward + backward, ``infer`` forward only.
    image_size
        The model's input size when it differs from the architecture's.
    """
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if precision != "auto":
        raise UserError(
            f"Unknown precision {precision!r}; use auto, float32 or bfloat16."
        )
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(False) else None
    if device.type != "cpu" or arch_name is None or not cpu_has_native_bf16():
        return None
    entry = cached_decision(arch_name, purpose, image_size)
    return torch.bfloat16 if entry["dtype"] == "bfloat16" else None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Model-agnostic choice (kept for callers without a model name)."""
    return autocast_for(device, None, precision)


def cached_decision(arch_name: str, purpose: str, image_size: int | None) -> dict:
    """The cached CPU choice for this machine and model, timing it once if absent."""
    from .models import architecture_of

    arch = architecture_of(arch_name)
    size = image_size or arch.image_size
    key = f"{machine_key()}/{arch.name}@{size}/{purpose}"
    if key in _decided:
        return _decided[key]
    path = cache_path()
    cache = _read_cache(path)
    if key in cache:
        _decided[key] = cache[key]
        return cache[key]
    busy = machine_busy()
    entry = {**time_block_precisions(arch, size, purpose), **machine_summary()}
    entry["busy"] = busy
    if not busy:  # a choice timed beside other work holds for this process only
        _write_cache(path, {key: entry})
    _decided[key] = entry
    return entry


def machine_busy() -> bool:
    """True when other processes keep the CPU cores busy (1-minute load average).

    A precision timed then is used by this process but not cached: beside
    other work, multi-threaded kernels wait on descheduled threads, and bf16
    suffered more than float32 here (vit_b at 256 px timed 1.33 s against
    0.90 s under a load of 10 on 2 cores, 0.06 s against 0.10 s when quiet).
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return False
    return load > 0.75 * (os.cpu_count() or 1) + 0.5


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent or damaged: time again
        return {}


def _write_cache(path: Path, cache: dict) -> None:
    from .files import atomic_write_json

    # a read-only home only loses the cache: the decision holds for this process
    with contextlib.suppress(OSError):
        # another process may have added keys since we read
        atomic_write_json(path, {**_read_cache(path), **cache})


def time_block_precisions(arch, image_size: int, purpose: str, steps: int = 2) -> dict:
    """Seconds per step of one encoder block in float32 and under bf16 autocast.

    One global-attention block of ``arch`` (with the fast path's attention) at
    the run's token count, capped at ``MAX_TIMING_TOKENS``; the two precisions
    alternate and the fastest of ``steps`` repeats counts, so a neighbour's
    load burst hits both alike.
    """
    block, x = _timing_block(arch, image_size)
    times = {"float32": [], "bfloat16": []}
    for i in range(steps + 1):
        for name in times:
            seconds = _time_once(block, x, name == "bfloat16", purpose == "train")
            if i:  # the first round warms up kernels and the allocator
                times[name].append(seconds)
    fp32, bf16 = min(times["float32"]), min(times["bfloat16"])
    return {
        "dtype": "bfloat16" if bf16 < BF16_MARGIN * fp32 else "float32",
        "float32_s": fp32,
        "bfloat16_s": bf16,
        "tokens": x.shape[1] * x.shape[2],
        "purpose": purpose,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _timing_block(arch, image_size: int):
    from segment_anything.modeling.image_encoder import Block

    from .fastpath import patch_attention

    grid = image_size // arch.patch_size
    side = max(1, min(grid, int(MAX_TIMING_TOKENS**0.5)))
    generator = torch.Generator().manual_seed(0)
    block = Block(
        arch.embed_dim,
        arch.num_heads,
        qkv_bias=True,
        use_rel_pos=True,
        window_size=0,
        input_size=(side, side),
        norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6),
    )
    block.requires_grad_(False)  # PEFT: the frozen weights dominate the step
    patch_attention(block.attn)
    x = torch.randn(1, side, side, arch.embed_dim, generator=generator)
    return block, x


def _time_once(block, x, bf16: bool, backward: bool) -> float:
    x = x.detach().requires_grad_(backward)
    start = time.perf_counter()
    with torch.set_grad_enabled(backward):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = block(x)
        if backward:
            out.float().square().mean().backward()
    return time.perf_counter() - start
