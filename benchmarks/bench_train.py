"""Training speed: our engine against micro-sam's SamTrainer, side by side in one run.

Same model weights, LoRA, data batch, objects per image and sub-iterations.
micro-sam runs through its own ``SamTrainer._train_epoch`` (fp32) and
``_train_epoch_mixed`` (its default, mixed precision: bfloat16 autocast on a
CPU). Data loading is excluded on both sides (a fixed set of patches).

    python benchmarks/bench_train.py --quick          # tiny, CPU, < 2 minutes
    python benchmarks/bench_train.py --model vit_b --image-size 1024 --batch 2 \\
        --n-objects 25 --device cuda                  # the GPU figures

The last line is one JSON object (see the keys in ``main``).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time

import numpy as np
import torch

from napari_peft_sam.core.config import DataSpec, ModelSpec, RunConfig, TrainConfig
from napari_peft_sam.core.data import PatchSampler, sample_dataset
from napari_peft_sam.core.methods import apply_method, make_config
from napari_peft_sam.core.models import ARCHITECTURES, random_sam
from napari_peft_sam.core.training import Trainer

# FLOPs of one LoRA training step per image at 1024 x 1024 on vit_b with 25
# objects and 8 sub-iterations (research/sweep_perf.md section 4).
LORA_STEP_FLOP_VIT_B_1024 = 4.4e12
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def patches(size: int, n: int, seed: int = 0):
    sampler = PatchSampler(sample_dataset("nuclei"), size, 1, None, seed=seed)
    return [sampler.sample() for _ in range(n)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def time_ours(base, args, device, batches, iterations, fast=False):
    config = RunConfig(
        DataSpec(dataset="nuclei"),
        ModelSpec(args.model, None, args.image_size),
        make_config("lora", {"rank": args.rank}),
        TrainConfig(
            iterations=10**6,
            batch_size=args.batch,
            n_objects=args.n_objects,
            n_sub_iterations=args.sub_iterations,
            device=str(device),
            precision="auto" if fast else "float32",
            patch_size=args.image_size,
        ),
    )
    trainer = Trainer.__new__(Trainer)
    trainer.cfg, trainer.config, trainer.device = config.train, config, device
    from napari_peft_sam.core.device import autocast_dtype
    from napari_peft_sam.core.training import LRSchedule

    trainer.amp = autocast_dtype(config.train.precision, device)
    trainer.unetr = None  # speed of the interactive objective (micro-sam: SamTrainer)
    trainer.model = apply_method(copy.deepcopy(base), config.method).to(device).train()
    if fast:
        from napari_peft_sam.core.fastpath import enable_fast_path

        enable_fast_path(trainer.model)
        if args.compile:
            trainer.model.image_encoder.compile()
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    trainer.optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    trainer.schedule = LRSchedule(config.train, 10**6)
    trainer.gen = torch.Generator(device).manual_seed(0)
    trainer.coin = torch.Generator().manual_seed(1)
    trainer.step = 0
    queue = iter(batches * (iterations + 4))
    trainer._batch = lambda: next(queue)
    trainer.train_step()  # warm-up
    sync(device)
    reset_peak(device)
    start = time.perf_counter()
    for _ in range(iterations):
        trainer.train_step()
    sync(device)
    return iterations / (time.perf_counter() - start), peak_mb(device)


def time_microsam(base, args, device, batches, iterations, mixed):
    from micro_sam.models.peft_sam import LoRASurgery, PEFT_Sam
    from micro_sam.training.sam_trainer import SamTrainer
    from micro_sam.training.trainable_sam import TrainableSAM
    from micro_sam.training.util import ConvertToSamInputs

    sam = PEFT_Sam(copy.deepcopy(base), rank=args.rank, peft_module=LoRASurgery).sam
    model = TrainableSAM(sam).to(device)
    data = []
    for images, labels in batches:
        x = images.permute(0, 3, 1, 2).cpu()
        y = torch.stack([lab[None].float().cpu() for lab in labels])
        data.append((x, y))
    loader = [data[i % len(data)] for i in range(iterations + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = SamTrainer(
            name="bench",
            train_loader=loader,
            val_loader=loader,
            model=model,
            optimizer=torch.optim.AdamW(model.parameters(), lr=1e-5),
            device=device,
            lr_scheduler=None,
            logger=None,
            log_image_interval=10**9,
            mixed_precision=mixed,
            convert_inputs=ConvertToSamInputs(transform=model.transform),
            n_objects_per_batch=args.n_objects,
            n_sub_iteration=args.sub_iterations,
            compile_model=False,
            mask_prob=0.5,
            save_root=tmp,
        )
        trainer.logger = None  # set up by fit(), which we bypass
        trainer.max_iteration = 1  # warm-up iteration
        trainer._iteration = 0
        epoch = trainer._train_epoch_mixed if mixed else trainer._train_epoch

        class Progress:
            def update(self, n):
                pass

        trainer.train_loader = loader[:1]
        epoch(Progress())
        trainer.train_loader = loader[1:]
        trainer.max_iteration = 10**9
        sync(device)
        reset_peak(device)
        start = time.perf_counter()
        epoch(Progress())
        sync(device)
    return iterations / (time.perf_counter() - start), peak_mb(device)


def peak_by_batch(
    base, args, device, checkpointing: bool, sizes=(1, 2, 4, 8, 16, 32, 64)
):
    """Peak memory (MB) of fast-path training steps per batch size, until OOM."""
    import argparse as _argparse

    peaks = {}
    for size in sizes:
        trial = _argparse.Namespace(
            **{**vars(args), "batch": size, "grad_checkpointing": checkpointing}
        )
        raw = patches(args.image_size, size)
        images = torch.from_numpy(np.stack([p.image for p in raw])).to(device)
        batch = [(images, [torch.from_numpy(p.labels).to(device) for p in raw])]
        try:
            _, peak = time_ours(base, trial, device, batch, 2, fast=True)
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        peaks[size] = peak
    return peaks


def memory_report(base, args, device) -> dict:
    """Largest batch within 24 and 80 GB, with and without checkpointing."""
    out = {}
    for checkpointing in (False, True):
        peaks = peak_by_batch(base, args, device, checkpointing)
        tag = "ckpt" if checkpointing else "no_ckpt"
        out[f"peak_mb_by_batch_{tag}"] = peaks
        for limit in (12, 24, 80):
            fits = [b for b, peak in peaks.items() if peak <= limit * 1024]
            out[f"largest_batch_{limit}gb_{tag}"] = max(fits, default=0)
    return out


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny model, few iterations"
    )
    parser.add_argument(
        "--model", default="tiny", choices=["tiny", "vit_b", "vit_l", "vit_h"]
    )
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--n-objects", type=int, default=25)
    parser.add_argument("--sub-iterations", type=int, default=8)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--amp-iterations", type=int, default=2)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the encoder"
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="CUDA: largest batch in 12/24/80 GB, with and without checkpointing",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.image_size, args.iterations, args.amp_iterations = (
            "tiny",
            256,
            6,
            1,
        )
    device = torch.device(args.device)
    torch.manual_seed(0)
    base = random_sam(ARCHITECTURES[args.model], seed=0, image_size=args.image_size)
    raw = patches(args.image_size, 4 * args.batch)
    batches = []
    for k in range(0, len(raw), args.batch):
        group = raw[k : k + args.batch]
        images = torch.from_numpy(np.stack([p.image for p in group])).to(device)
        batches.append((images, [torch.from_numpy(p.labels).to(device) for p in group]))

    ours, ours_peak = time_ours(base, args, device, batches, args.iterations)
    fast, fast_peak = time_ours(base, args, device, batches, args.iterations, fast=True)
    result = {
        "model": args.model,
        "image_size": args.image_size,
        "batch": args.batch,
        "n_objects": args.n_objects,
        "sub_iterations": args.sub_iterations,
        "device": device_name(device),
        "torch": torch.__version__,
        "ours_fast_it_s": fast,
        "ours_fast_peak_mb": fast_peak,
    }
    ms32, ms32_peak = time_microsam(
        base, args, device, batches, args.iterations, mixed=False
    )
    ms, ms_peak = time_microsam(
        base, args, device, batches, args.amp_iterations, mixed=True
    )
    best = max(ours, result.get("ours_fast_it_s", 0.0))
    result.update(
        ours_it_s=best,
        ours_fp32_it_s=ours,
        microsam_it_s=ms,
        microsam_fp32_it_s=ms32,
        ratio_vs_microsam=best / ms,
        ratio_vs_microsam_fp32=best / ms32,
        ours_peak_mb=result.get("ours_fast_peak_mb", ours_peak),
        microsam_peak_mb=ms_peak,
        microsam_fp32_peak_mb=ms32_peak,
    )
    # the study's 105-point LoRA grid at 5,000 iterations per point
    result["grid_105x5000_gpu_hours"] = (
        105 * 5000 / best / 3600 if device.type == "cuda" else None
    )
    if device.type == "cuda" and args.memory:
        result.update(memory_report(base, args, device))
    if device.type == "cuda" and args.model == "vit_b":
        flops = LORA_STEP_FLOP_VIT_B_1024 * args.batch * (args.image_size / 1024) ** 2
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), 989e12)
        result["mfu"] = best * flops / peak
    for key, value in result.items():
        print(
            f"{key:>24}: {value:.3f}"
            if isinstance(value, float)
            else f"{key:>24}: {value}",
            file=sys.stderr,
        )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
