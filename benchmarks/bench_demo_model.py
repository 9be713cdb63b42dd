"""How good is a base model on held-out data: mSA, mask pieces, click latency.

For a base model (default: the shipped ``demo``) on a dataset's held-out part
it prints mSA for single point, single box, ip and ib (micro-sam's
evaluation), the connected pieces per predicted single-point and single-box
mask (a clean mask is one piece; each extra piece is a false positive in
mSA), the median per-object IoU, and the latency of one click once the image
is embedded. The last line is one JSON object.

    .venv/bin/python benchmarks/bench_demo_model.py --dataset star_convex widefield nuclei
    .venv/bin/python benchmarks/bench_demo_model.py --checkpoint OLD.pt --card OLD.json

``--card`` takes a demo card whose ``architecture`` describes the checkpoint,
so an older demo model with another shape can be measured too.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from napari_peft_sam.core.demo_scores import (
    SETS,
    click_latency_ms,
    held_out_sets,
    mask_report,
)
from napari_peft_sam.core.evaluation import evaluate, run_to_end
from napari_peft_sam.core.inference import Segmenter
from napari_peft_sam.core.models import (
    Architecture,
    build_sam,
    load_base_model,
    load_state_dict,
)


def load(model: str, checkpoint: Path | None, card: Path | None):
    """A base model by name, or a checkpoint with the architecture of a card."""
    if card is None:
        sam, _ = load_base_model(model, checkpoint)
        return sam
    arch = json.loads(card.read_text())["architecture"]
    arch["global_attn"] = tuple(arch["global_attn"])
    sam = build_sam(Architecture(**arch))
    sam.load_state_dict(load_state_dict(checkpoint))
    return sam.eval()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--card", type=Path, help="card with the architecture")
    parser.add_argument(
        "--dataset",
        nargs="+",
        default=list(SETS),
        choices=SETS,
    )
    parser.add_argument("--synthetic-images", type=int, default=16)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    sam = load(args.model, args.checkpoint, args.card)
    segmenter = Segmenter(sam)
    sets = held_out_sets(args.synthetic_images, args.dataset)
    result = {
        "model": str(args.checkpoint or args.model),
        "parameters": sum(p.numel() for p in sam.parameters()),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "datasets": {},
    }
    for name in args.dataset:
        data = sets[name]
        started = time.perf_counter()
        msa = run_to_end(evaluate(segmenter, data)).metrics
        masks = mask_report(segmenter, data)
        result["datasets"][name] = {
            "images": len(data),
            "objects": data.n_objects,
            "msa": msa,
            "masks": masks,
            "seconds": round(time.perf_counter() - started, 1),
        }
        line = ", ".join(f"{k} {v:.3f}" for k, v in msa.items())
        pieces = ", ".join(
            f"{k} {v['pieces_per_mask']:.2f} pieces/mask "
            f"({v['fragmented_share']:.0%} fragmented, median IoU {v['median_iou']:.2f})"
            for k, v in masks.items()
        )
        print(f"{name} ({data.describe()}): mSA {line}")
        print(f"  {pieces}")
    result["click_latency_ms"] = click_latency_ms(
        segmenter, sets[args.dataset[0]][0].image
    )
    print(
        "click latency: "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in result["click_latency_ms"].items())
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
