"""Evaluation speed: our in-memory engine against micro-sam's path-based evaluation.

Same model, same images: single point, single box, ip and ib through
``napari_peft_sam.core.evaluation`` and through micro-sam's
``run_inference_with_iterative_prompting`` + ``run_evaluation_for_iterative_prompting``
(which write TIFFs and CSVs), side by side. Then the interactive path: the time
to embed an image and the prompt-to-mask latency of a click with a cached
embedding (median and 95th percentile), for the demo-sized model and the vit_b
architecture.

    python benchmarks/bench_eval.py --quick     # CPU, < 2 minutes (demo model at 1024)
    python benchmarks/bench_eval.py             # vit_b at 1024 (random weights)
    python benchmarks/bench_eval.py --quick --no-clicks --profile 1  # + top ops

Both sides are timed in wall-clock seconds and in this process's CPU seconds
(``*_cpu_s_per_image``: robust to other work on a shared machine, where the
wall-clock ratio is not). Imports both sides need are done before either
clock starts. ``--precision auto`` lets ``core.device.autocast_for`` choose
our side's precision for this machine (micro-sam's side runs in float32, as
it ships); ``--save`` writes ``results/eval_<model>_1024_<machine>.json``.
The last line is one JSON object, with the machine.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import machine
import numpy as np
import torch

from napari_peft_sam.core.data import Dataset
from napari_peft_sam.core.device import autocast_for
from napari_peft_sam.core.evaluation import evaluate, run_to_end
from napari_peft_sam.core.inference import Segmenter
from napari_peft_sam.core.models import ARCHITECTURES, load_base_model, random_sam
from napari_peft_sam.core.sources import sample_dataset


def model_for(name: str, image_size: int | None = None):
    if name in ("tiny", "demo"):
        try:
            return load_base_model(name, image_size=image_size)[0]
        except Exception:  # demo weights not built: same architecture, random weights
            return random_sam(ARCHITECTURES[name], seed=0)
    return random_sam(ARCHITECTURES[name], seed=0, image_size=image_size)


def as_uint8(dataset: Dataset) -> Dataset:
    samples = [
        type(s)(np.round(s.image).clip(0, 255), s.labels, s.name) for s in dataset
    ]
    return Dataset(samples, dataset.source)


class Clock:
    """Wall-clock and process CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def time_ours(sam, dataset, device, autocast):
    """Our evaluation on a copy of ``sam`` (``Segmenter`` patches its model's
    modules with the fast path, which micro-sam's side must not run)."""
    import micro_sam.util  # noqa: F401  (gt_prompts uses it; an import is no evaluation)

    sam = copy.deepcopy(sam)
    with Clock() as clock:
        result = run_to_end(
            evaluate(Segmenter(sam, device, autocast=autocast), dataset)
        )
    return clock, result.metrics


def time_microsam(sam, dataset, device):
    import imageio.v3 as iio
    from micro_sam.evaluation.evaluation import run_evaluation_for_iterative_prompting
    from micro_sam.evaluation.inference import run_inference_with_iterative_prompting
    from segment_anything import SamPredictor

    if getattr(sam, "fast_path", False):
        raise RuntimeError("micro-sam's side must run segment_anything's own modules")
    predictor = SamPredictor(sam.to(device))
    metrics = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images, gts = [], []
        for k, sample in enumerate(dataset):
            iio.imwrite(tmp / f"im{k}.tif", sample.image[..., 0].astype(np.uint8))
            iio.imwrite(tmp / f"gt{k}.tif", sample.labels.astype(np.uint32))
            images.append(str(tmp / f"im{k}.tif"))
            gts.append(str(tmp / f"gt{k}.tif"))
        clock = Clock().__enter__()
        for box, first, last in (
            (False, "single point", "ip"),
            (True, "single box", "ib"),
        ):
            root = tmp / f"pred{box}"
            run_inference_with_iterative_prompting(
                predictor,
                images,
                gts,
                embedding_dir=None,
                prediction_dir=str(root),
                start_with_box_prompt=box,
            )
            table = run_evaluation_for_iterative_prompting(
                gts, str(root), str(tmp / f"exp{box}"), start_with_box_prompt=box
            )
            metrics[first] = float(table["mSA"].iloc[0])
            metrics[last] = float(table["mSA"].iloc[-1])
        clock.__exit__()
    return clock, metrics


def profile_sides(sam, dataset, device, autocast, n: int) -> dict:
    """Top ops of ``n`` images (one step = one image) of each side."""

    def per_image(evaluate_set):
        images = itertools.cycle(dataset)
        return lambda: evaluate_set(Dataset([next(images)], dataset.source))

    sides = {
        "ours": per_image(lambda d: time_ours(sam, d, device, autocast)),
        "microsam": per_image(lambda d: time_microsam(sam, d, device)),
    }
    cuda = device.type == "cuda"
    rows = {side: machine.profile(side, step, n, cuda) for side, step in sides.items()}
    return {**rows, "steps": n}


def click_latency(sam, image, device, clicks: int, autocast=None):
    segmenter = Segmenter(sam, device, autocast=autocast)
    start = time.perf_counter()
    segmenter.embed(image, key="bench")
    embed_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    h, w = image.shape[:2]
    times = []
    points = []
    for _ in range(clicks):
        points.append([rng.integers(0, w), rng.integers(0, h)])
        labels = [1] + [int(rng.integers(0, 2)) for _ in points[1:]]
        start = time.perf_counter()
        segmenter.segment(
            image, np.array(points[-4:]), np.array(labels[-4:]), key="bench"
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return embed_s, float(np.percentile(times, 50)), float(np.percentile(times, 95))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--model",
        default="demo",
        choices=["tiny", "demo"],
        help="the click-latency model (demo-sized)",
    )
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--clicks", type=int, default=60)
    parser.add_argument(
        "--compare-model",
        default=None,
        choices=["demo", "vit_b"],
        help="model of the metric timing (default: vit_b; demo with --quick), at 1024 px: "
        "micro-sam's batched_inference scales prompts for a 1024 input whatever the model",
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "float32", "bfloat16"]
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--save", action="store_true", help="write results/")
    parser.add_argument("--no-clicks", action="store_true", help="skip click latency")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="STEPS",
        help="profile this many images of each side's evaluation (top ops)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    compare = args.compare_model or ("demo" if args.quick else "vit_b")
    if args.quick:
        args.images, args.clicks = 1, 40
    device = torch.device(args.device)
    autocast = autocast_for(device, compare, args.precision, "infer", image_size=1024)
    _, held_out = sample_dataset("nuclei").split(0.2, seed=0)
    dataset = as_uint8(Dataset(list(held_out)[: args.images], "nuclei held-out"))
    big = model_for(compare, image_size=1024)
    ours, ours_metrics = time_ours(big, dataset, device, autocast)
    theirs, theirs_metrics = time_microsam(big, dataset, device)
    n = len(dataset)
    result = {
        "compare_model": f"{compare} at 1024",
        "images": n,
        "device": str(device),
        "precision": str(autocast or torch.float32).replace("torch.", ""),
        "ours_s_per_image": ours.wall / n,
        "microsam_s_per_image": theirs.wall / n,
        "ratio_vs_microsam": theirs.wall / ours.wall,
        "ours_cpu_s_per_image": ours.cpu / n,
        "microsam_cpu_s_per_image": theirs.cpu / n,
        "ratio_cpu_vs_microsam": theirs.cpu / ours.cpu,
        "max_abs_metric_diff": max(
            abs(ours_metrics[k] - theirs_metrics[k]) for k in ours_metrics
        ),
        "ours_metrics": ours_metrics,
        "microsam_metrics": theirs_metrics,
    }
    if args.profile:
        result["profile"] = profile_sides(big, dataset, device, autocast, args.profile)
    if not args.no_clicks:
        result.update(clicks(args, dataset[0].image, device, autocast))
    result["machine"] = machine.summary()
    result["command"] = " ".join(["python benchmarks/bench_eval.py", *sys.argv[1:]])
    for key, value in result.items():
        if key != "profile":  # its tables are printed above
            print(f"{key:>26}: {value}", file=sys.stderr)
    if args.save:
        print(f"saved {machine.save(f'eval_{compare}_1024', result)}", file=sys.stderr)
    print(json.dumps(result))
    return result


def clicks(args, image, device, autocast) -> dict:
    """Embedding time and prompt-to-mask latency with a cached embedding."""
    embed_s, p50, p95 = click_latency(model_for(args.model), image, device, args.clicks)
    vit_b = model_for("vit_b", image_size=1024)
    vit_image = np.repeat(np.repeat(image, 4, axis=0), 4, axis=1)  # 1024 x 1024
    vit_embed_s, vit_p50, vit_p95 = click_latency(
        vit_b, vit_image, device, max(10, args.clicks // 4), autocast
    )
    return {
        "click_model": args.model,
        "embed_s": embed_s,
        "click_p50_ms": p50,
        "click_p95_ms": p95,
        "vit_b_embed_s": vit_embed_s,
        "vit_b_click_p50_ms": vit_p50,
        "vit_b_click_p95_ms": vit_p95,
    }


if __name__ == "__main__":
    main()
