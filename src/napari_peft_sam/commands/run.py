"""``data``, ``train`` and ``evaluate``: one run, from the command line."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from .base import Command
from .common import (
    add_data_arguments,
    add_model_arguments,
    add_train_arguments,
    data_spec,
    explicit_train,
    has_data,
    parse_sets,
)


def load_data(args: argparse.Namespace, split: str | None):
    """The dataset the flags name; ``split`` selects a benchmark split or a part
    of the seeded split of own data (None: every image given)."""
    from napari_peft_sam.core.config import RunConfig
    from napari_peft_sam.core.errors import UserError
    from napari_peft_sam.core.splits import is_benchmark, load, train_val

    if not has_data(args):
        raise UserError("Pass either --dataset NAME or both --images and --labels.")
    config = RunConfig(data=data_spec(args))
    if is_benchmark(config):
        from napari_peft_sam.core.benchmarks import benchmark_dataset

        return benchmark_dataset(
            args.dataset, "test" if split in (None, "all") else split
        )
    dataset = load(config)
    if split in (None, "all"):
        return dataset
    train, val = train_val(config, dataset)
    return train if split == "train" else val


class DataCommand(Command):
    name = "data"
    help = "Check a dataset and summarise it (images, objects, sizes)."

    def add_arguments(self, parser):
        add_data_arguments(parser)
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args):
        dataset = load_data(args, args.split)
        sizes = sorted({s.labels.shape for s in dataset})
        summary = {
            "source": dataset.source,
            "images": len(dataset),
            "objects": dataset.n_objects,
            "sizes": [list(size) for size in sizes],
        }
        if args.json:
            print(json.dumps(summary))
        else:
            print(dataset.describe())
            print("sizes: " + ", ".join("x".join(map(str, s)) for s in sizes))
        return 0


def run_config(args: argparse.Namespace):
    """The RunConfig of ``train``.

    A new run: flags over the base model's recipe (``--init-from`` supplies
    the base model and method of the run it starts from). ``--resume``: the
    run's own settings from its card, with any flag given changing them.
    """
    from napari_peft_sam.core.config import ModelSpec, RunConfig
    from napari_peft_sam.core.errors import UserError
    from napari_peft_sam.core.methods import make_config
    from napari_peft_sam.core.recipes import resolve

    source = args.out if args.resume else args.init_from
    base = RunConfig.from_card(source) if source else None
    if base is None and not (args.model and args.method and has_data(args)):
        raise UserError("Pass --model, --method and the data (--dataset or --images).")
    data = data_spec(args) if has_data(args) else base.data
    if args.model:
        model = ModelSpec(args.model, args.checkpoint, args.image_size)
    else:
        model = base.model
    sets = parse_sets(args.set)
    if args.method:
        method = make_config(args.method, sets)
    else:
        method = base.method.replace(**sets)
    explicit = explicit_train(args)
    if not args.resume:
        train, sources = resolve(explicit, model.name)
        return RunConfig(data, model, method, train, sources, args.init_from)
    train = type(base.train).from_dict(base.train.to_dict() | explicit)
    sources = base.train_sources | dict.fromkeys(explicit, "explicit")
    return RunConfig(data, model, method, train, sources, base.init_from)


def _resume_command(args: argparse.Namespace) -> str:
    return f"napari-peft-sam train --out {shlex.quote(str(args.out))} --resume"


class TrainCommand(Command):
    name = "train"
    help = "Fine-tune a base model with a PEFT method into a run folder."

    def add_arguments(self, parser):
        add_data_arguments(parser, split=False)
        add_model_arguments(parser)
        group = parser.add_argument_group("method")
        group.add_argument("--method", help="PEFT method (see `methods`)")
        group.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="method hyperparameter, e.g. --set rank=32 --set alpha=4",
        )
        add_train_arguments(parser)
        run = parser.add_argument_group("run folder")
        run.add_argument("--out", required=True, help="run folder (new or empty)")
        run.add_argument(
            "--resume",
            action="store_true",
            help="continue the run in --out with its own settings",
        )
        run.add_argument(
            "--allow-changes",
            action="store_true",
            help="with --resume: accept settings that differ from the run's",
        )
        run.add_argument(
            "--init-from",
            metavar="RUN_DIR",
            help="warm start from that run's adapter (same base model and method)",
        )
        run.add_argument(
            "--storage",
            help="then evaluate the held-out images and record the run in this "
            "results store (journal file or database URL)",
        )
        run.add_argument("--study", default="runs", help="study name in --storage")
        run.add_argument(
            "--evaluate",
            action="store_true",
            help="evaluate the held-out images after training (always with --storage)",
        )

    def run(self, args):
        from napari_peft_sam._progress import ProgressPrinter
        from napari_peft_sam.core import signals
        from napari_peft_sam.core.events import StopToken, run_to_end
        from napari_peft_sam.core.runs import run

        config = run_config(args)
        stop = StopToken()
        restore = signals.install(stop, lambda text: print(text, file=sys.stderr))
        printer = ProgressPrinter(sys.stdout)
        try:
            events = run(
                config,
                args.out,
                storage=args.storage,
                study=args.study,
                stop=stop,
                resume=args.resume,
                allow_changes=args.allow_changes,
                evaluate=bool(args.evaluate or args.storage),
            )
            record = run_to_end(events, printer.show)
        except KeyboardInterrupt:
            printer.close()
            print(
                f"Interrupted; the last checkpoint is kept. Resume with: "
                f"{_resume_command(args)}",
                file=sys.stderr,
            )
            return signals.exit_code(stop)  # the first signal's
        finally:
            restore()
        printer.close()
        if record.status == "stopped":
            signal_name = getattr(stop, "reason", "") or "a stop"
            print(
                f"Stopped at step {record.iterations} by {signal_name}; the checkpoint "
                f"is saved. Resume with: {_resume_command(args)}",
                file=sys.stderr,
            )
            return signals.exit_code(stop)
        print(
            f"finished {record.iterations} steps in {record.train_time_s:.1f} s; "
            f"run folder {record.run_dir}"
        )
        if record.metrics:
            values = ", ".join(
                f"{k} {v:.3f}" for k, v in record.metrics.items() if v is not None
            )
            print(f"held-out ({record.evaluated_on.get('images')} images): {values}")
        return 0


def evaluation_set(args: argparse.Namespace):
    """The images ``evaluate`` scores, and a sentence saying which they are.

    Every image given is evaluated, except when the images are the run's own
    training data: then only its held-out part (the rest trained it).
    ``--split`` selects a part explicitly; a benchmark uses its test split.
    """
    from napari_peft_sam.core.config import RunConfig
    from napari_peft_sam.core.splits import is_benchmark

    if args.split is not None or is_benchmark(RunConfig(data=data_spec(args))):
        dataset = load_data(args, args.split)
        return dataset, f"{dataset.describe()}"
    dataset = load_data(args, None)
    if args.run is None:
        return dataset, f"every image given: {dataset.describe()}"
    from napari_peft_sam.core.data import Dataset
    from napari_peft_sam.core.runfolder import read_card
    from napari_peft_sam.core.splits import image_hashes

    card = read_card(args.run)
    trained = set(card.get("data", {}).get("train_hashes") or [])
    hashes = image_hashes(dataset)
    if trained and trained <= set(hashes):  # the run's own data: its held-out part
        kept = [s for s, h in zip(dataset, hashes, strict=True) if h not in trained]
        part = Dataset(kept, f"{dataset.source} (held-out)")
        return part, (
            f"the run's own data: its {len(part)} held-out image(s) "
            f"({len(dataset) - len(part)} trained it)"
        )
    overlap = sum(h in trained for h in hashes)
    note = f" ({overlap} of them trained this run)" if overlap else ""
    return dataset, f"every image given: {dataset.describe()}{note}"


class EvaluateCommand(Command):
    name = "evaluate"
    help = "Compute the study's metrics for a base model or a run on a dataset."

    def add_arguments(self, parser):
        from napari_peft_sam.core import catalog

        source = parser.add_argument_group("what to evaluate")
        source.add_argument("--run", help="a run folder (its best adapter)")
        source.add_argument("--tag", default="best", choices=["best", "latest"])
        add_model_arguments(parser)
        add_data_arguments(parser)
        parser.add_argument(
            "--metrics",
            default=",".join(catalog.PROMPT),
            help=f"comma-separated, from: {', '.join(catalog.NAMES)}",
        )
        parser.add_argument("--iterations", type=int, default=8, help="ip/ib rounds")
        parser.add_argument(
            "--tune-on",
            choices=["train", "val"],
            help="search ais/amg post-processing on this part first (never images "
            "that are evaluated)",
        )
        parser.add_argument("--device", default="auto")
        parser.add_argument(
            "--precision",
            choices=["float32", "bfloat16", "auto"],
            default="float32",
            help="float32 keeps numbers comparable across machines; auto takes the "
            "machine's faster one (bf16 where the CPU has it; metrics move < 0.01)",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def run(self, args):
        from napari_peft_sam.core import catalog
        from napari_peft_sam.core.errors import UserError
        from napari_peft_sam.core.evaluation import evaluate_model
        from napari_peft_sam.core.events import run_to_end

        if (args.run is None) == (args.model is None):
            raise UserError("Pass either --run RUN_DIR or --model NAME.")
        if args.iterations < 1:
            raise UserError(f"--iterations must be at least 1, got {args.iterations}.")
        metrics = catalog.parse(args.metrics)
        dataset, which = evaluation_set(args)
        tune_on = _tune_set(args, dataset)
        from napari_peft_sam._progress import ProgressPrinter

        printer = ProgressPrinter(sys.stderr)
        events = evaluate_model(
            dataset,
            metrics,
            run_dir=args.run,
            tag=args.tag,
            model=args.model,
            checkpoint=args.checkpoint,
            image_size=args.image_size,
            device=args.device,
            n_iterations=args.iterations,
            tune_on=tune_on,
            precision=args.precision,
            refuse_missing=True,
        )
        result = run_to_end(events, printer.show)
        printer.close()
        print(f"evaluated {which}", file=sys.stderr if args.json else sys.stdout)
        _print_result(result, args.json)
        if result.card_error:
            print(
                f"error: the metrics above were computed but not stored: {result.card_error}",
                file=sys.stderr,
            )
            return 2
        return 0


def _tune_set(args, evaluated):
    if not args.tune_on:
        return None
    from napari_peft_sam.core.errors import UserError
    from napari_peft_sam.core.splits import image_hashes

    tune_on = load_data(args, args.tune_on)
    if set(image_hashes(tune_on)) & set(image_hashes(evaluated)):
        raise UserError(
            f"--tune-on {args.tune_on} holds images that are also evaluated; tune on "
            "another part (e.g. --tune-on train) or evaluate a separate --split."
        )
    return tune_on


def _print_result(result, as_json: bool) -> None:
    for name, reason in result.missing.items():
        print(f"{name}: missing ({reason})", file=sys.stderr)
    if as_json:
        print(json.dumps(result.metrics))
        return
    for name, value in result.metrics.items():
        if value is None:
            print(f"  {name:<13} missing")
            continue
        print(
            f"  {name:<13} {value:.4f}  (SA50 {result.sa50[name]:.3f}, "
            f"SA75 {result.sa75[name]:.3f})"
        )
