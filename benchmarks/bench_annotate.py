"""Annotate, retrain, annotate faster: clicks per object, round by round.

A simulated annotator (``core.annotator``: micro-sam's iterative prompting
rules, commit at an IoU threshold or after a click budget) annotates a few
images per round with the current model; the images go into an annotation
set (``core.annotations``), and the model is retrained on the grown set
(``core.retrain``: warm start from the previous round's run, the base
model's recipe) before the next round. Round 0 annotates with the base model.

Printed per round: clicks per object, model seconds per object, the share of
objects that reached the IoU threshold, the clicks per object and mSA of the
round's model on images never annotated (``test``: the same images every
round, so a drop there is the model's and not easier images') and mSA on the
set's held-out images (what the GUI's curve shows). The last line is one
JSON object; ``--save`` writes it to ``results/annotate_<machine>.json``.

    python benchmarks/bench_annotate.py                # organoids, demo model
    python benchmarks/bench_annotate.py --method lora  # LoRA r32 on q and v
    python benchmarks/bench_annotate.py --quick        # tiny model, 2 rounds
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from machine import save, summary  # noqa: E402


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="organoids")
    p.add_argument("--model", default="demo")
    p.add_argument(
        "--method",
        default="full",
        help="how each round retrains (default full: on the 1.2M-parameter demo "
        "model it costs what LoRA does and cut the clicks faster, see results/)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="method hyperparameter, as in `train --set` (e.g. targets=q,k,v,mlp)",
    )
    p.add_argument("--lr", type=float, help="retrain learning rate (default: recipe)")
    p.add_argument("--rounds", type=int, default=4, help="rounds 0 .. N-1")
    p.add_argument("--per-round", type=int, default=4, help="images per round")
    p.add_argument(
        "--iterations", type=int, help="steps per retrain (default: the recipe's)"
    )
    p.add_argument(
        "--val-interval",
        type=int,
        help="validate every N steps (default: the recipe's); the best adapter "
        "by validation loss is the round's model",
    )
    p.add_argument("--start", default="box", choices=["box", "point"])
    p.add_argument("--iou", type=float, default=0.8, help="commit threshold")
    p.add_argument("--budget", type=int, default=15, help="clicks per object")
    p.add_argument("--held-out-every", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--home", help="keep the set and runs here (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="tiny model, 2 rounds")
    p.add_argument("--save", action="store_true", help="write results/NAME_*.json")
    p.add_argument("--name", default="annotate", help="results file name part")
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.rounds, args.per_round, args.iterations = "tiny", 2, 2, 4
        args.held_out_every = 2
    return args


def segmenter_for(model: str, run_dir: str | None):
    """The round's model: the base model, or the last retrain's best adapter."""
    from napari_peft_sam.core.checkpoints import load_run
    from napari_peft_sam.core.inference import Segmenter
    from napari_peft_sam.core.models import load_base_model

    sam = load_run(run_dir, "best")[0] if run_dir else load_base_model(model)[0]
    return Segmenter(sam, "cpu")


def test_msa(model: str, run_dir: str | None, test) -> dict:
    """single box and ib of the round's model on images never annotated."""
    from napari_peft_sam.core.evaluation import evaluate_model
    from napari_peft_sam.core.events import run_to_end

    events = evaluate_model(
        test, ["single box", "ib"], run_dir=run_dir, model=None if run_dir else model
    )
    return run_to_end(events, lambda e: None).metrics


def annotate_round(args, segmenter, images, round_index):
    """Annotate ``images``; returns the set's items and the round's figures."""
    from napari_peft_sam.core.annotations import Item
    from napari_peft_sam.core.annotator import Rules, annotate

    rules = Rules(args.start, args.iou, args.budget, args.seed + round_index)
    items, objects, seconds = [], [], 0.0
    for sample in images:
        effort = annotate(segmenter, sample.image, sample.labels, rules)
        objects += effort.objects
        seconds += effort.seconds
        image = sample.image[..., 0].astype(np.uint8)  # grayscale as shipped
        items.append(Item(image, effort.labels, sample.name, True, effort.effort()))
    figures = {
        "images": len(images),
        "objects": len(objects),
        "clicks_per_object": float(np.mean([o.clicks for o in objects])),
        "seconds_per_object": seconds / len(objects),
        "reached": float(np.mean([o.reached for o in objects])),
        "mean_iou_committed": float(np.mean([o.iou for o in objects])),
        "mean_iou_first_prompt": float(np.mean([o.first_iou for o in objects])),
    }
    return items, figures


def retrain_round(args, aset, home: Path, init_from: str | None, round_index: int):
    from napari_peft_sam.commands.common import parse_sets
    from napari_peft_sam.core.events import run_to_end
    from napari_peft_sam.core.retrain import retrain

    run_dir = home / "runs" / f"round{round_index + 1}"
    started = time.perf_counter()
    record = run_to_end(
        retrain(
            aset,
            run_dir,
            model={"name": args.model},
            method={"method": args.method, **parse_sets(args.set)},
            init_from=init_from,
            train={  # None: the recipe's
                "iterations": args.iterations,
                "val_interval": args.val_interval,
                "lr": args.lr,
                "seed": args.seed,
            },
            storage=str(home / "results.journal"),
        ),
        lambda e: None,
    )
    return str(run_dir), record, time.perf_counter() - started


def main(argv=None) -> dict:
    from napari_peft_sam.core.annotations import AnnotationSet
    from napari_peft_sam.core.sources import sample_dataset

    args = parse(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = sample_dataset(args.dataset)
    used = args.rounds * args.per_round
    if used >= len(data):
        raise SystemExit(f"{args.dataset} has {len(data)} images; annotate fewer.")
    test = type(data)(data.samples[used:], f"{data.source} (never annotated)")
    home = Path(args.home or tempfile.mkdtemp(prefix="bench-annotate-"))
    aset = AnnotationSet.open(home, "bench", held_out_every=args.held_out_every)
    run_dir, rows, started = None, [], time.perf_counter()
    for r in range(args.rounds):
        segmenter = segmenter_for(args.model, run_dir)
        batch = data.samples[r * args.per_round : (r + 1) * args.per_round]
        items, figures = annotate_round(args, segmenter, batch, r)
        aset.add(items, round=r)
        figures |= {"round": r, "model": run_dir or args.model}
        figures["test"] = test_msa(args.model, run_dir, test)
        # the same images every round, so image difficulty cancels out
        on_test = annotate_round(args, segmenter, test.samples, 0)[1]
        figures["test_clicks_per_object"] = on_test["clicks_per_object"]
        figures["set_held_out"] = rows[-1]["next_held_out"] if rows else None
        if r < args.rounds - 1:
            run_dir, record, seconds = retrain_round(args, aset, home, run_dir, r)
            figures["retrain_s"] = seconds
            figures["next_held_out"] = record.metrics or None
        rows.append(figures)
        print(_line(figures), flush=True)
    return _result(args, rows, home, time.perf_counter() - started)


def _line(f: dict) -> str:
    held = (f["set_held_out"] or {}).get("single box")
    return (
        f"round {f['round']}: {f['clicks_per_object']:.2f} clicks/object, "
        f"{f['seconds_per_object'] * 1000:.0f} ms/object, "
        f"{f['reached'] * 100:.0f} % reached IoU; test images: "
        f"{f['test_clicks_per_object']:.2f} clicks/object, single box "
        f"{f['test']['single box']:.3f}, ib {f['test']['ib']:.3f}"
        + ("" if held is None else f", set held-out single box {held:.3f}")
        + (f", retrain {f['retrain_s']:.0f} s" if "retrain_s" in f else "")
    )


def model_identity(name: str) -> dict:
    """Which base model this was: the demo model's card and weights hash."""
    import hashlib

    if name != "demo":
        return {"name": name}
    assets = Path(__file__).parents[1] / "src/napari_peft_sam/assets"
    card = json.loads((assets / "demo_sam.json").read_text())
    weights = (assets / "demo_sam.pt").read_bytes()
    return {
        "name": name,
        "card": "src/napari_peft_sam/assets/demo_sam.json",
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "made_by": card.get("reproduce") or card.get("made_by"),
        "pretraining_data": (card.get("pretraining") or {}).get("data"),
    }


def _result(args, rows: list[dict], home: Path, seconds: float) -> dict:
    first, last = rows[0]["clicks_per_object"], rows[-1]["clicks_per_object"]
    result = {
        "benchmark": "annotate",
        "settings": {k: v for k, v in vars(args).items() if k != "home"},
        "model": model_identity(args.model),
        "rounds": rows,
        "ratio_last_to_first": last / first,
        "test_ratio_last_to_first": rows[-1]["test_clicks_per_object"]
        / rows[0]["test_clicks_per_object"],
        "target": "round 3 clicks/object <= 0.70 x round 0",
        "total_s": seconds,
        "home": str(home),
        "machine": summary(),
    }
    if args.save:
        print(f"wrote {save(args.name, result)}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
