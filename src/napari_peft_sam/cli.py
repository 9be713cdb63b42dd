"""The ``napari-peft-sam`` command line.

Each subcommand is a small class with ``add_arguments`` and ``run`` (optuna's
CLI shape). Heavy imports happen inside ``run`` so that ``--help`` is instant.
Exit codes: 0 success, 2 a user error (one sentence on stderr), 1 anything
else.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import ClassVar


class Command:
    """A subcommand: a name, a one-line help, its arguments and its action."""

    name: ClassVar[str]
    help: ClassVar[str]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare this command's flags."""

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


class MethodsCommand(Command):
    name = "methods"
    help = "List every PEFT method with its hyperparameters, defaults and ranges."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args):
        from napari_peft_sam.core.methods import available_methods, get_method

        described = [get_method(m).config_cls.describe() for m in available_methods()]
        if args.json:
            print(json.dumps(described, indent=2))
            return 0
        for method in described:
            flags = [
                "mergeable" if method["mergeable"] else "not mergeable",
                "starts as the base model" if method["zero_init"] else "random init",
            ]
            print(f"{method['method']:<15} {method['title']} ({', '.join(flags)})")
            print(textwrap.indent(method["summary"], " " * 16))
            for hp in method["hyperparameters"]:
                default = hp["default"]
                default = (
                    ",".join(map(str, default))
                    if isinstance(default, list)
                    else default
                )
                print(f"{'':16}{hp['name']} = {default}  [{hp['range']}]")
                print(f"{'':18}{hp['help']}")
            print()
        return 0


class ModelsCommand(Command):
    name = "models"
    help = "List the base models and where their weights are cached."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args):
        from napari_peft_sam.core.models import available_models, model_cache_dir

        cache = model_cache_dir()
        rows = [
            {"name": name, "cached": name == "tiny" or (cache / name).is_file()}
            for name in available_models()
        ]
        if args.json:
            print(json.dumps({"cache": str(cache), "models": rows}, indent=2))
        else:
            print(f"cache folder: {cache}")
            for row in rows:
                print(
                    f"  {row['name']:<24} {'cached' if row['cached'] else 'download'}"
                )
        return 0


class ExportCommand(Command):
    name = "export"
    help = (
        "Export a run for micro-sam (PEFT checkpoint) or as merged plain SAM weights."
    )

    def add_arguments(self, parser):
        parser.add_argument("--run", required=True, help="run folder")
        parser.add_argument("--format", required=True, choices=["micro-sam", "merged"])
        parser.add_argument("--out", required=True, help="output .pt file")
        parser.add_argument("--tag", default="best", choices=["best", "latest"])

    def run(self, args):
        from napari_peft_sam.core.checkpoints import export_run

        recipe = export_run(args.run, args.format, args.out, tag=args.tag)
        print(f"wrote {recipe['checkpoint_path']} (loading recipe in {args.out}.json)")
        call = [f"model_type={recipe['model_type']!r}", f"checkpoint_path={args.out!r}"]
        if recipe.get("peft_kwargs"):
            call.append("peft_kwargs=PEFT_KWARGS")
            print(f"PEFT_KWARGS = {json.dumps(recipe['peft_kwargs'])}")
            print("  (replace the 'peft_module' string by the class of that name")
            print("   in micro_sam.models.peft_sam)")
        if recipe.get("image_size"):
            call.append(f"image_size={recipe['image_size']}")
        print(f"load it with micro_sam.util.get_sam_model({', '.join(call)})")
        return 0


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data-source flags shared by data, train and evaluate."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        help="sample data (nuclei, organoids) or a benchmark (orgasegment, livecell, "
        "covid_if, mitolab_glycolytic_muscle, platy_cilia)",
    )
    group.add_argument(
        "--images", nargs="+", help="image folder(s), glob(s) or file(s)"
    )
    group.add_argument(
        "--labels", nargs="+", help="label folder(s), glob(s) or file(s)"
    )
    group.add_argument("--image-key", help="dataset inside zarr/hdf5 image files")
    group.add_argument("--label-key", help="dataset inside zarr/hdf5 label files")
    group.add_argument(
        "--stack", action="store_true", help="treat 3D arrays as stacks of 2D planes"
    )
    group.add_argument("--seed", type=int, default=0, help="split (and training) seed")
    group.add_argument(
        "--split",
        choices=["train", "val", "test", "all"],
        help="benchmarks: their split; own data and sample data: the held-out part "
        "(val, the default for evaluate) or all",
    )


def dataset_from_args(args: argparse.Namespace, default_split: str = "all"):
    from napari_peft_sam.core.data import load_dataset
    from napari_peft_sam.core.errors import UserError

    if (args.dataset is None) == (args.images is None and args.labels is None):
        raise UserError("Pass either --dataset NAME or both --images and --labels.")
    from napari_peft_sam.core.benchmarks import BENCHMARKS

    split = args.split or default_split
    if args.dataset in BENCHMARKS:
        return load_dataset(args.dataset, split="test" if split == "all" else split)
    dataset = load_dataset(
        args.dataset,
        args.images,
        args.labels,
        args.image_key,
        args.label_key,
        args.stack,
    )
    if split == "all":
        return dataset
    train, val = dataset.split(getattr(args, "val_fraction", 0.2), args.seed)
    return {"train": train, "val": val, "test": val}[split]


class DataCommand(Command):
    name = "data"
    help = "Check a dataset and summarise it (images, objects, sizes)."

    def add_arguments(self, parser):
        add_data_arguments(parser)
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args):
        dataset = dataset_from_args(args)
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


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", required=required, help="base model name (see `models`)"
    )
    group.add_argument(
        "--checkpoint", help="custom weights for the model's architecture"
    )
    group.add_argument(
        "--image-size", type=int, help="model input size (default: the model's)"
    )


def parse_sets(pairs: list[str] | None) -> dict[str, str]:
    from napari_peft_sam.core.errors import ConfigError

    values = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE, got {pair!r}.")
        values[key.strip()] = value.strip()
    return values


class TrainCommand(Command):
    name = "train"
    help = "Fine-tune a base model with a PEFT method into a run folder."

    def add_arguments(self, parser):
        from napari_peft_sam.core.config import TrainConfig

        add_data_arguments(parser)
        add_model_arguments(parser)
        d = TrainConfig()
        group = parser.add_argument_group("method and training")
        group.add_argument(
            "--method", required=True, help="PEFT method (see `methods`)"
        )
        group.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="method hyperparameter, e.g. --set rank=32 --set alpha=4",
        )
        group.add_argument("--lr", type=float, default=d.lr)
        group.add_argument("--iterations", type=int, default=d.iterations)
        group.add_argument("--batch-size", type=int, default=d.batch_size)
        group.add_argument(
            "--n-objects",
            type=int,
            default=d.n_objects,
            help="objects per image and iteration (the main memory knob)",
        )
        group.add_argument("--sub-iterations", type=int, default=d.n_sub_iterations)
        group.add_argument(
            "--patch-size", type=int, help="training patch (default: model input)"
        )
        group.add_argument("--val-fraction", type=float, default=0.2)
        group.add_argument("--val-interval", type=int, default=d.val_interval)
        group.add_argument(
            "--early-stopping", type=int, help="validation rounds without improvement"
        )
        group.add_argument(
            "--scheduler", choices=["plateau", "cosine", "none"], default=d.scheduler
        )
        group.add_argument("--warmup", type=int, default=d.warmup)
        group.add_argument("--weight-decay", type=float, default=d.weight_decay)
        group.add_argument("--device", default=d.device, help="auto, cpu or cuda")
        group.add_argument(
            "--precision", choices=["auto", "float32", "bfloat16"], default="auto"
        )
        group.add_argument("--grad-checkpointing", action="store_true")
        group.add_argument(
            "--with-decoder",
            action="store_true",
            help="also train the AIS decoder (needed for the ais metric)",
        )
        group.add_argument(
            "--checkpoint-interval", type=int, default=d.checkpoint_interval
        )
        parser.add_argument("--out", required=True, help="run folder to create")
        parser.add_argument(
            "--resume", action="store_true", help="continue the run in --out"
        )

    def run(self, args):
        from napari_peft_sam.core.config import (
            DataSpec,
            ModelSpec,
            RunConfig,
            TrainConfig,
        )
        from napari_peft_sam.core.methods import make_config
        from napari_peft_sam.core.training import train

        if (args.dataset is None) == (args.images is None and args.labels is None):
            from napari_peft_sam.core.errors import UserError

            raise UserError("Pass either --dataset NAME or both --images and --labels.")
        config = RunConfig(
            data=DataSpec(
                args.dataset,
                args.images,
                args.labels,
                args.image_key,
                args.label_key,
                args.stack,
                args.val_fraction,
                args.seed,
            ),
            model=ModelSpec(args.model, args.checkpoint, args.image_size),
            method=make_config(args.method, parse_sets(args.set)),
            train=TrainConfig(
                lr=args.lr,
                iterations=args.iterations,
                batch_size=args.batch_size,
                n_objects=args.n_objects,
                n_sub_iterations=args.sub_iterations,
                patch_size=args.patch_size,
                val_interval=args.val_interval,
                early_stopping=args.early_stopping,
                scheduler=args.scheduler,
                warmup=args.warmup,
                weight_decay=args.weight_decay,
                seed=args.seed,
                device=args.device,
                precision=args.precision,
                grad_checkpointing=args.grad_checkpointing,
                with_decoder=args.with_decoder,
                checkpoint_interval=args.checkpoint_interval,
            ),
        )
        from napari_peft_sam._progress import ProgressPrinter

        printer = ProgressPrinter(sys.stdout)
        from napari_peft_sam.core.events import run_to_end

        result = run_to_end(train(config, args.out, resume=args.resume), printer.show)
        printer.close()
        best = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
        print(
            f"{result.reason} after {result.steps} steps in {result.train_time_s:.1f} s; "
            f"best validation loss {best}; run folder {result.run_dir}"
        )
        return 0


class EvaluateCommand(Command):
    name = "evaluate"
    help = "Compute the study's metrics for a base model or a run on a dataset."

    def add_arguments(self, parser):
        from napari_peft_sam.core.evaluation import ALL_METRICS

        source = parser.add_argument_group("what to evaluate")
        source.add_argument("--run", help="a run folder (its best adapter)")
        source.add_argument("--tag", default="best", choices=["best", "latest"])
        add_model_arguments(parser, required=False)
        add_data_arguments(parser)
        parser.add_argument(
            "--metrics",
            default="single point,single box,ip,ib",
            help=f"comma-separated, from: {', '.join(ALL_METRICS)}",
        )
        parser.add_argument("--iterations", type=int, default=8, help="ip/ib rounds")
        parser.add_argument(
            "--tune-on",
            choices=["train", "val"],
            help="search ais/amg post-processing on this split first (never the evaluated one)",
        )
        parser.add_argument("--device", default="auto")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def run(self, args):
        from napari_peft_sam.core.errors import UserError
        from napari_peft_sam.core.evaluation import evaluate_model

        if (args.run is None) == (args.model is None):
            raise UserError("Pass either --run RUN_DIR or --model NAME.")
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        dataset = dataset_from_args(args, default_split="val")
        tune_on = None
        if args.tune_on:
            if args.tune_on == (args.split or "val"):
                raise UserError(
                    "--tune-on must name another split than the evaluated one."
                )
            tune_on = dataset_from_args(
                argparse.Namespace(**{**vars(args), "split": args.tune_on})
            )
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
        )
        from napari_peft_sam.core.events import run_to_end

        result = run_to_end(events, printer.show)
        for name, reason in result.missing.items():
            print(f"{name}: missing ({reason})", file=sys.stderr)
        if args.json:
            print(json.dumps(result.metrics))
        else:
            print(f"{dataset.describe()}")
            for name, value in result.metrics.items():
                text = "missing" if value is None else f"{value:.4f}"
                extra = (
                    ""
                    if value is None
                    else (
                        f"  (SA50 {result.sa50[name]:.3f}, SA75 {result.sa75[name]:.3f})"
                    )
                )
                print(f"  {name:<13} {text}{extra}")
        return 0


class SweepCommand(Command):
    name = "sweep"
    help = "Run a hyperparameter grid (or a search) into a results store."

    def add_arguments(self, parser):
        from napari_peft_sam.core.presets import PRESETS

        spec = parser.add_mutually_exclusive_group(required=True)
        spec.add_argument("--preset", help=f"one of {', '.join(PRESETS)}")
        spec.add_argument("--config", help="a sweep spec (YAML)")
        parser.add_argument(
            "--storage", required=True, help="journal file (default) or database URL"
        )
        parser.add_argument("--runs", default="runs", help="folder for the run folders")
        parser.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="override a fixed setting, e.g. --set iterations=200",
        )
        parser.add_argument(
            "--executor", choices=["inline", "local", "slurm"], default="inline"
        )
        parser.add_argument("--workers", type=int, default=1)
        parser.add_argument(
            "--search",
            type=int,
            metavar="N",
            help="instead of the grid: N trials of TPE + successive halving",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=600.0,
            help="seconds without heartbeat before a remote trial counts as lost",
        )
        slurm = parser.add_argument_group("slurm")
        slurm.add_argument("--partition")
        slurm.add_argument("--gpus", type=int, default=1)
        slurm.add_argument("--time", type=int, default=240, help="minutes per job")
        slurm.add_argument("--mem", type=int, default=32, help="GB per job")
        slurm.add_argument("--cpus", type=int, default=8)
        slurm.add_argument(
            "--setup", action="append", help="shell line run before the job"
        )
        slurm.add_argument("--array-parallelism", type=int, default=4)
        slurm.add_argument("--no-wait", action="store_true", help="submit and return")
        jobs = parser.add_argument_group("jobs submitted earlier (after a restart)")
        jobs.add_argument("--status", action="store_true", help="show the sweep's jobs")
        jobs.add_argument(
            "--cancel", action="store_true", help="cancel the sweep's jobs"
        )

    def run(self, args):
        from napari_peft_sam.core import executors, results
        from napari_peft_sam.core.presets import preset
        from napari_peft_sam.core.sweep import SweepSpec, run_search

        spec = preset(args.preset) if args.preset else SweepSpec.load(args.config)
        overrides = parse_sets(args.set)
        if overrides:
            spec = SweepSpec.from_dict(
                {**spec.__dict__, "fixed": {**spec.fixed, **coerce_numbers(overrides)}}
            )
        if args.status or args.cancel:
            return self._manage(args, spec)
        if args.search:
            study = run_search(args.storage, spec, args.search, args.runs)
            print(
                f"search: {len(study.trials)} trials; best {spec.primary} {study.best_value:.4f} "
                f"at {study.best_params}"
            )
            return 0
        jobs = executors.launch(
            spec,
            args.storage,
            args.runs,
            args.executor,
            args.workers,
            args.grace,
            vars(args),
        )
        if args.no_wait and args.executor != "inline":
            print("submitted jobs " + ", ".join(j.job_id for j in jobs))
            return 0
        executors.wait(jobs)
        print(results.markdown(results.rows(args.storage, [spec.name])))
        return 0

    @staticmethod
    def _manage(args, spec) -> int:
        from napari_peft_sam.core import executors

        if args.cancel:
            print(
                f"cancelled {executors.cancel(args.storage, spec.name)} job(s); "
                "run the sweep again to finish their points"
            )
            return 0
        for job in executors.attach(args.storage, spec.name):
            print(f"{job.job_id}: {job.state}")
        return 0


def coerce_numbers(values: dict[str, str]) -> dict:
    import yaml

    return {k: yaml.safe_load(v) for k, v in values.items()}


class ReportCommand(Command):
    name = "report"
    help = (
        "Print the results store as the seed's Markdown table or as CSV; draw heatmaps."
    )

    def add_arguments(self, parser):
        parser.add_argument("--storage", required=True)
        parser.add_argument("--study", action="append", help="only these studies")
        parser.add_argument("--format", choices=["markdown", "csv"], default="markdown")
        parser.add_argument(
            "--heatmap",
            nargs=3,
            metavar=("METRIC", "X", "Y"),
            help="also draw METRIC over hyperparameters X and Y",
        )
        parser.add_argument("--out", default="heatmap.png", help="heatmap file")

    def run(self, args):
        from napari_peft_sam.core import results

        table = results.rows(args.storage, args.study)
        if not table:
            from napari_peft_sam.core.errors import UserError

            raise UserError(f"The results store {args.storage} holds no runs yet.")
        print(
            results.markdown(table)
            if args.format == "markdown"
            else results.to_csv(table)
        )
        if args.heatmap:
            results.heatmap(table, *args.heatmap, args.out)
            print(f"heatmap: {args.out}", file=sys.stderr)
        return 0


class DemoCommand(Command):
    name = "demo"
    help = "The main job, offline: fine-tune the shipped demo model on a new domain."

    def add_arguments(self, parser):
        parser.add_argument("--workdir", default="runs/demo", help="where results go")

    def run(self, args):
        import time

        from napari_peft_sam.core import results
        from napari_peft_sam.core.demo import run_demo

        started = time.monotonic()
        out = run_demo(args.workdir, log=lambda m: print(m, flush=True))
        base = out["base"]
        print(
            "\nbase model (no fine-tuning): "
            + ", ".join(f"{k} {v:.3f}" for k, v in base.items() if v is not None)
        )
        print("\nLoRA on organoids (held-out images, mSA):\n")
        print(results.markdown(out["table"]))
        print(f"\nheatmap: {out['heatmap']}")
        print(f"results store: {out['storage']}  ({time.monotonic() - started:.0f} s)")
        print(
            f"print them again any time: napari-peft-sam report --storage {out['storage']}"
        )
        print(
            f"open them in napari (table, heatmap, prompt tester): "
            f"napari-peft-sam gui --home {args.workdir}"
        )
        return 0


class GuiCommand(Command):
    name = "gui"
    help = "Open napari with the plugin's widgets docked, the sample data and the demo model."

    def add_arguments(self, parser):
        parser.add_argument(
            "--home",
            help="folder of the results store and runs (default: $NAPARI_PEFT_SAM_HOME "
            "or ~/napari-peft-sam); 'runs/demo' shows the demo's results",
        )
        parser.add_argument(
            "--sample", default="organoids", choices=["nuclei", "organoids", "none"]
        )

    def run(self, args):
        from napari_peft_sam._qt.launch import launch

        launch(home=args.home, sample=None if args.sample == "none" else args.sample)
        return 0


COMMANDS: dict[str, type[Command]] = {
    c.name: c
    for c in (
        MethodsCommand,
        ModelsCommand,
        DataCommand,
        TrainCommand,
        EvaluateCommand,
        SweepCommand,
        ReportCommand,
        DemoCommand,
        ExportCommand,
        GuiCommand,
    )
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-peft-sam",
        description="Parameter-efficient fine-tuning of Segment Anything models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cls in COMMANDS.items():
        command = cls()
        sp = sub.add_parser(name, help=cls.help, description=cls.help)
        command.add_arguments(sp)
        sp.set_defaults(_command=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    from napari_peft_sam.core.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        return args._command.run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
