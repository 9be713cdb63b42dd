"""Training speed and memory: our engine against micro-sam's SamTrainer, side by side.

Same model weights, LoRA, data batch, objects per image and sub-iterations.
micro-sam runs through its own ``SamTrainer._train_epoch`` (float32) and
``_train_epoch_mixed`` (its default, mixed precision: bfloat16 autocast on a
CPU). Ours runs the real ``Trainer.train_step`` in float32 and in the
precision ``core.device.autocast_for`` picks for this machine. The modes take
turns (rounds of a few steps each), so a neighbour's load falls on all alike.
Data loading is excluded on both sides (a fixed set of patches).

    python benchmarks/bench_train.py --quick          # tiny, CPU
    python benchmarks/bench_train.py --model vit_b --image-size 256
    python benchmarks/bench_train.py --memory         # peak RSS vs the estimate,
                                                      # the default command too
    python benchmarks/bench_train.py --quick --profile 3  # + top ops of each side
    python benchmarks/bench_train.py --model vit_b --image-size 1024 --batch 2 \\
        --device cuda                                 # the GPU figures

The last line is one JSON object with the ratios and the machine; ``--save``
writes it to ``benchmarks/results/train_<mode>_<machine>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import machine
import numpy as np
import torch

from napari_peft_sam.core import trainer as engine
from napari_peft_sam.core.config import DataSpec, ModelSpec, RunConfig, TrainConfig
from napari_peft_sam.core.data import Dataset
from napari_peft_sam.core.device import autocast_for, machine_summary
from napari_peft_sam.core.methods import make_config
from napari_peft_sam.core.models import ARCHITECTURES, BaseModelInfo, random_sam
from napari_peft_sam.core.patches import PatchSampler
from napari_peft_sam.core.sources import sample_dataset

# FLOPs of one LoRA training step per image at 1024 x 1024 on vit_b with 25
# objects and 8 sub-iterations (research/sweep_perf.md section 4).
LORA_STEP_FLOP_VIT_B_1024 = 4.4e12
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
RESULTS = Path(__file__).parent / "results"


def fixed_batches(args, device):
    sampler = PatchSampler(sample_dataset("nuclei"), args.image_size, 1, None, seed=0)
    raw = [sampler.sample() for _ in range(4 * args.batch)]
    batches = []
    for k in range(0, len(raw), args.batch):
        group = raw[k : k + args.batch]
        images = torch.from_numpy(np.stack([p.image for p in group])).to(device)
        batches.append((images, [torch.from_numpy(p.labels).to(device) for p in group]))
    return batches


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours(base, args, device, batches, precision: str, **settings):
    """A real Trainer on ``base``'s weights whose batches come from ``batches``."""
    info = BaseModelInfo(args.model, args.model, "random", image_size=args.image_size)
    engine.load_base_model = lambda *a, **k: (copy.deepcopy(base), info)
    config = RunConfig(
        DataSpec(dataset="nuclei"),
        ModelSpec(args.model, None, args.image_size),
        make_config("lora", {"rank": args.rank}),
        TrainConfig(
            lr=1e-5,
            iterations=10**6,
            batch_size=args.batch,
            n_objects=args.n_objects,
            n_sub_iterations=args.sub_iterations,
            device=str(device),
            precision=precision,
            patch_size=args.image_size,
            val_patches=1,
            compile=args.compile,
            **settings,
        ),
    )
    data = Dataset(sample_dataset("nuclei").samples[:3], "three")
    trainer = engine.Trainer(config, Path("unused"), data)
    queue = iter(batches * 10**4)
    trainer._batch = lambda: next(queue)
    trainer.train_step()  # warm-up: kernels, allocator, autocast caches
    return lambda: trainer.train_step()


def microsam(base, args, device, batches, mixed: bool):
    """micro-sam's SamTrainer on the same weights and batches; one call = one step."""
    from micro_sam.models.peft_sam import LoRASurgery, PEFT_Sam
    from micro_sam.training.sam_trainer import SamTrainer
    from micro_sam.training.trainable_sam import TrainableSAM
    from micro_sam.training.util import ConvertToSamInputs

    sam = PEFT_Sam(copy.deepcopy(base), rank=args.rank, peft_module=LoRASurgery).sam
    model = TrainableSAM(sam).to(device)
    data = [
        (
            images.permute(0, 3, 1, 2).cpu(),
            torch.stack([y[None].float().cpu() for y in labels]),
        )
        for images, labels in batches
    ]
    trainer = SamTrainer(
        name="bench",
        train_loader=data,
        val_loader=data,
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
        save_root="/tmp/bench_train_microsam",
    )
    trainer.logger, trainer._iteration, trainer.max_iteration = None, 0, 10**9
    epoch = trainer._train_epoch_mixed if mixed else trainer._train_epoch
    counter = iter(range(10**9))

    class Progress:
        def update(self, n):
            pass

    def step():
        trainer.train_loader = [data[next(counter) % len(data)]]
        epoch(Progress())

    step()  # warm-up
    return step


def race(steps: dict, rounds: int, per_round: int, device) -> dict[str, float]:
    """Iterations per second of each mode, the modes taking turns."""
    spent = dict.fromkeys(steps, 0.0)
    for _ in range(rounds):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            sync(device)
            spent[name] += time.perf_counter() - start
    return {name: rounds * per_round / s for name, s in spent.items()}


def speed(args, device) -> dict:
    torch.manual_seed(0)
    base = random_sam(ARCHITECTURES[args.model], seed=0, image_size=args.image_size)
    batches = fixed_batches(args, device)
    amp = autocast_for(device, args.model, "auto", "train", args.image_size)
    auto = "bfloat16" if amp is not None else "float32"
    steps = {
        "ours_fp32": ours(base, args, device, batches, "float32"),
        "microsam_fp32": microsam(base, args, device, batches, mixed=False),
        "microsam": microsam(base, args, device, batches, mixed=True),
    }
    if auto != "float32":
        steps["ours_bf16"] = ours(base, args, device, batches, "bfloat16")
    rates = race(steps, args.rounds, args.per_round, device)
    best = rates.get("ours_bf16" if auto == "bfloat16" else "ours_fp32")
    faster = max(rates["microsam"], rates["microsam_fp32"])
    result = {
        "model": args.model,
        "image_size": args.image_size,
        "batch": args.batch,
        "n_objects": args.n_objects,
        "sub_iterations": args.sub_iterations,
        "precision_auto": auto,
        **{f"{k}_it_s": v for k, v in rates.items()},
        "ours_it_s": best,
        "ratio_vs_microsam": best / rates["microsam"],
        "ratio_vs_microsam_fp32": best / rates["microsam_fp32"],
        "ratio_vs_faster_microsam": best / faster,
    }
    if device.type == "cuda" and args.model == "vit_b":
        flops = LORA_STEP_FLOP_VIT_B_1024 * args.batch * (args.image_size / 1024) ** 2
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), 989e12)
        result["mfu"] = best * flops / peak
        result["grid_105x5000_gpu_hours"] = 105 * 5000 / best / 3600
    if args.profile:
        result["profile"] = profile_sides(steps, rates, auto, args.profile, device)
    return result


def profile_sides(steps: dict, rates: dict, auto: str, n: int, device) -> dict:
    """Top ops of ``n`` steps of our chosen mode and of the faster micro-sam mode."""
    modes = {
        "ours": "ours_bf16" if auto == "bfloat16" else "ours_fp32",
        "microsam": max(("microsam", "microsam_fp32"), key=rates.get),
    }
    cuda = device.type == "cuda"
    rows = {side: machine.profile(m, steps[m], n, cuda) for side, m in modes.items()}
    return {**rows, "steps": n, "modes": modes}


CHILD = """
import json, resource, sys
from pathlib import Path
import torch
from napari_peft_sam.core import trainer as engine
from napari_peft_sam.core.config import DataSpec, ModelSpec, RunConfig, TrainConfig
from napari_peft_sam.core.data import Dataset
from napari_peft_sam.core.methods import make_config
from napari_peft_sam.core.models import ARCHITECTURES, BaseModelInfo, random_sam
from napari_peft_sam.core.sources import sample_dataset

arch, size, train, legacy = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
def random_weights(*args, **kwargs):
    sam = random_sam(ARCHITECTURES[arch], seed=0, image_size=size)
    return sam, BaseModelInfo(arch, arch, "random", image_size=size)
engine.load_base_model = random_weights
config = RunConfig(DataSpec(dataset="nuclei"), ModelSpec(arch, None, size),
                   make_config("lora", {"rank": 32}), TrainConfig(**train))
trainer = engine.Trainer(config, Path("unused"),
                         Dataset(sample_dataset("nuclei").samples[:3], "three"))
if legacy == "1":  # before memory saving: one graph over every pass, one backward
    def step():
        trainer.step += 1
        images, labels = trainer._batch()
        loss = trainer._loss(images, labels, trainer.step % 2 == 0,
                             trainer.cfg.n_sub_iterations, trainer.cfg.mask_prob)[0]
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        return (float(loss),)
    trainer.train_step = step
if trainer.device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
losses = [trainer.train_step()[0] for _ in range(2)]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if trainer.device.type == "cuda":
    peak = torch.cuda.max_memory_allocated() / 2**20
print(json.dumps({"peak_mb": peak, "losses": losses, "bf16": trainer.amp is not None,
                  "memory_saving": config.train.memory_saving}))
"""

# (model, input size, training settings, legacy path): the settings
# (LoRA r32, 25 objects, 8 sub-iterations) on vit_b at 1024 and on the demo
MEMORY_CASES = [
    ("demo", 256, {}, True),
    ("demo", 256, {}, False),
    ("vit_b", 256, {"precision": "float32"}, False),
    ("vit_b", 512, {"precision": "float32"}, True),
    ("vit_b", 512, {"precision": "float32"}, False),
    ("vit_b", 1024, {"precision": "float32"}, False),
]


def measure(arch, size, settings, legacy, device) -> dict:
    """Peak memory (RSS on the CPU, allocated on CUDA) of 2 steps in a child process."""
    import subprocess

    train = {"val_patches": 1, "device": device.type, **settings}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            arch,
            str(size),
            json.dumps(train),
            str(int(legacy)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_rows(device, cases=MEMORY_CASES) -> list[dict]:
    """Measured peak memory next to ``core.budget``'s estimate, per case."""
    from napari_peft_sam.core.footprint import estimate_peak_mb

    rows = []
    for arch, size, settings, legacy in cases:
        got = measure(arch, size, settings, legacy, device)
        cfg = TrainConfig(**settings)
        level = "off" if legacy else got["memory_saving"]
        estimate = estimate_peak_mb(
            ARCHITECTURES[arch],
            make_config("lora", {"rank": 32}),
            cfg,
            device,
            got["bf16"],
            level,
            size,
        )
        row = {
            "model": arch,
            "image_size": size,
            "path": "before (one graph)" if legacy else f"ours ({level})",
            "bf16": got["bf16"],
            "peak_mb": round(got["peak_mb"]),
            "estimate_mb": None if legacy else round(estimate),
            "error": None if legacy else round(estimate / got["peak_mb"] - 1, 3),
        }
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


def default_command(workdir: Path) -> dict:
    """The plain default command in a child process: its peak RSS and the estimate.

    ``train --model vit_b --checkpoint F --method lora --iterations 2 --device
    cpu`` and no other flag, on three 256 x 256 tiles of the nuclei sample
    data; F holds random vit_b weights in micro-sam's format (a state dict).
    The peak is the child's ``ru_maxrss`` (``os.wait4``), validation included.
    """
    import os
    import shutil
    import subprocess

    from napari_peft_sam.core.config import RunConfig
    from napari_peft_sam.core.footprint import estimate_peak_mb
    from napari_peft_sam.core.sources import sample_data_root

    weights = workdir / "vit_b_random.pth"
    torch.save(random_sam(ARCHITECTURES["vit_b"], seed=0).state_dict(), weights)
    for sub in ("images", "labels"):
        (workdir / sub).mkdir()
        for path in sorted((sample_data_root() / "nuclei" / sub).iterdir())[:3]:
            shutil.copy(path, workdir / sub / path.name)
    out = workdir / "run"
    command = ["train", "--model", "vit_b", "--checkpoint", str(weights)]
    command += ["--method", "lora", "--iterations", "2", "--device", "cpu"]
    data = ["--images", str(workdir / "images"), "--labels", str(workdir / "labels")]
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "napari_peft_sam.cli",
            *command,
            *data,
            "--out",
            str(out),
        ]
    )
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the default command failed ({status})")
    card = json.loads((out / "card.json").read_text())
    config = RunConfig.from_dict(card["run_config"])
    cfg, size = config.train, config.model.image_size or 1024
    bf16 = autocast_for("cpu", "vit_b", cfg.precision, "train", size) is not None
    level = cfg.memory_saving
    estimate = estimate_peak_mb(
        ARCHITECTURES["vit_b"], config.method, cfg, "cpu", bf16, level, size
    )
    peak = usage.ru_maxrss / 1024
    return {
        "model": "vit_b",
        "image_size": size,
        "path": f"plain default command ({level})",
        "command": " ".join(["napari-peft-sam", *command]),
        "bf16": bf16,
        "peak_mb": round(peak),
        "estimate_mb": round(estimate),
        "error": round(estimate / peak - 1, 3),
        "preflight": card.get("preflight"),
    }


def precision_check(iterations: int, seeds=(0, 1)) -> dict:
    """Held-out metrics of demo LoRA runs trained in float32 and in bfloat16.

    The demo preset's first point (organoids, the demo model's quick recipe),
    ``iterations`` steps per run, each precision with every seed; evaluated in
    float32 on the held-out images, so only the training precision differs.
    The seed-to-seed spread in float32 is the noise the difference is judged by.
    """
    import dataclasses
    import tempfile

    from napari_peft_sam.core.evaluation import evaluate_model
    from napari_peft_sam.core.events import run_to_end
    from napari_peft_sam.core.presets import preset
    from napari_peft_sam.core.splits import held_out
    from napari_peft_sam.core.training import train

    spec = preset("demo")
    base = spec.run_config({"rank": 8, "alpha": 4})
    test_set = held_out(base)
    metrics = ["single point", "single box"]
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("float32", "bfloat16"):
            for seed in seeds:
                cfg = dataclasses.replace(
                    base.train, iterations=iterations, seed=seed, precision=precision
                )
                config = dataclasses.replace(base, train=cfg)
                run = Path(tmp) / f"{precision}_{seed}"
                run_to_end(train(config, run))
                result = run_to_end(
                    evaluate_model(test_set, metrics, run_dir=run, device="cpu")
                )
                scores[f"{precision}_seed{seed}"] = {
                    m: result.metrics[m] for m in metrics
                }
                print(
                    json.dumps({precision: seed, **scores[f"{precision}_seed{seed}"]}),
                    file=sys.stderr,
                )
    out = {"iterations": iterations, "held_out_images": len(test_set), "scores": scores}
    for m in metrics:
        fp32 = [scores[f"float32_seed{s}"][m] for s in seeds]
        bf16 = [scores[f"bfloat16_seed{s}"][m] for s in seeds]
        out[f"{m} float32 mean"] = float(np.mean(fp32))
        out[f"{m} bfloat16 mean"] = float(np.mean(bf16))
        out[f"{m} seed spread float32"] = float(np.ptp(fp32))
        out[f"{m} bf16 - fp32"] = float(np.mean(bf16) - np.mean(fp32))
    return out


def machine_tag(summary: dict) -> str:
    name = summary["gpu"] or summary["cpu"]
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps")
    parser.add_argument("--model", default="tiny", choices=sorted(ARCHITECTURES))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--n-objects", type=int, default=25)
    parser.add_argument("--sub-iterations", type=int, default=8)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="turns per mode")
    parser.add_argument("--per-round", type=int, default=2, help="steps per turn")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the encoder"
    )
    parser.add_argument(
        "--memory", action="store_true", help="peak memory vs the estimate, per setting"
    )
    parser.add_argument(
        "--precision-check",
        type=int,
        metavar="STEPS",
        help="demo LoRA in float32 and bfloat16, held-out metrics (this many steps)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="STEPS",
        help="after the race, profile this many steps of each side (top ops)",
    )
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.image_size, args.rounds, args.per_round = "tiny", 256, 3, 3
    device = torch.device(args.device)
    summary = machine_summary()
    if args.memory:
        import tempfile

        with tempfile.TemporaryDirectory() as workdir:
            plain = default_command(Path(workdir)) if device.type == "cpu" else None
        rows = memory_rows(device)
        if plain is not None:
            print(json.dumps(plain), file=sys.stderr)
            rows.append(plain)
        result, mode = {"memory": rows}, "memory"
    elif args.precision_check:
        result, mode = precision_check(args.precision_check), "precision"
    else:
        result, mode = speed(args, device), f"{args.model}_{args.image_size}"
    result["machine"] = summary
    given = sys.argv[1:] if argv is None else argv
    result["command"] = " ".join(["python benchmarks/bench_train.py", *given])
    for key, value in result.items():
        if key == "profile":  # its tables are printed above
            continue
        text = f"{value:.3f}" if isinstance(value, float) else value
        print(f"{key:>26}: {text}", file=sys.stderr)
    if args.save:
        tag = f"{device.type}_{machine_tag(summary)}"
        path = RESULTS / f"train_{'quick' if args.quick else mode}_{tag}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
