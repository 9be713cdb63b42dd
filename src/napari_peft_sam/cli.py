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

from napari_peft_sam.commands.base import Command
from napari_peft_sam.commands.run import DataCommand, EvaluateCommand, TrainCommand
from napari_peft_sam.commands.sweep import ReportCommand, SweepCommand


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
        from napari_peft_sam.core.recipes import recipe_for

        cache = model_cache_dir()
        rows = []
        for name in available_models():
            recipe = recipe_for(name)
            cached = name in ("tiny", "demo") or (cache / name).is_file()
            rows.append(
                {"name": name, "cached": cached, "recipe": recipe.name}
                | {"recipe_settings": recipe.settings}
            )
        if args.json:
            print(json.dumps({"cache": str(cache), "models": rows}, indent=2))
            return 0
        print(f"cache folder: {cache}")
        for row in rows:
            state = "cached" if row["cached"] else "download"
            print(f"  {row['name']:<24} {state:<9} recipe {row['recipe']}")
        print("\nrecipes (training settings a flag does not override):")
        for recipe in {
            recipe_for(r["name"]).name: recipe_for(r["name"]) for r in rows
        }.values():
            values = ", ".join(f"{k} {v}" for k, v in recipe.settings.items())
            print(f"  {recipe.name}: {values}\n    ({recipe.why})")
        return 0


class ExportCommand(Command):
    name = "export"
    help = (
        "Export a run: micro-sam PEFT checkpoint, merged SAM weights for micro-sam's "
        "annotator, or a bioimage.io package."
    )

    def add_arguments(self, parser):
        parser.add_argument("--run", required=True, help="run folder")
        parser.add_argument(
            "--format",
            required=True,
            choices=["micro-sam", "merged", "bioimageio"],
            help="micro-sam: PEFT checkpoint for micro-sam's Python API and further "
            "fine-tuning; merged: plain SAM weights (+ AIS decoder) that micro-sam's "
            "annotator opens; bioimageio: a model-zoo package for BiaPy and deepImageJ",
        )
        parser.add_argument(
            "--out",
            required=True,
            help="output .pt file; for bioimageio a .zip file or a folder",
        )
        parser.add_argument("--tag", default="best", choices=["best", "latest"])
        parser.add_argument(
            "--overwrite", action="store_true", help="replace an existing --out"
        )
        parser.add_argument(
            "--no-decoder",
            dest="decoder",
            action="store_false",
            help="leave the run's AIS decoder out",
        )
        group = parser.add_argument_group("bioimageio")
        group.add_argument("--name", help="package name (default: base model + method)")
        group.add_argument(
            "--author",
            action="append",
            dest="authors",
            metavar="NAME",
            help="an author of the package (repeat for several; default: your user name)",
        )
        group.add_argument(
            "--test-images",
            nargs="+",
            help="image(s) to test the package on, instead of the run's held-out images",
        )
        group.add_argument("--test-labels", nargs="+", help="their label images")
        group.add_argument(
            "--validate",
            action="store_true",
            help="run bioimage.io's own test of the package after writing it",
        )

    def run(self, args):
        from napari_peft_sam.core.export import export_run

        package = {}
        if args.format == "bioimageio":
            package = {"name": args.name, "authors": args.authors}
            if args.test_images or args.test_labels:
                from napari_peft_sam.core.sources import load_dataset

                package["test_data"] = load_dataset(
                    images=args.test_images, labels=args.test_labels
                )
        recipe = export_run(
            args.run,
            args.format,
            args.out,
            tag=args.tag,
            overwrite=args.overwrite,
            decoder=args.decoder,
            **package,
        )
        extra = "" if args.format == "bioimageio" else f" (recipe in {args.out}.json)"
        decoder = " with the AIS decoder" if recipe["decoder"] else ""
        print(f"wrote {recipe['path']}{decoder}{extra}")
        if recipe.get("peft_kwargs"):
            print(f"PEFT_KWARGS = {json.dumps(recipe['peft_kwargs'])}")
        print(recipe["how_to_open"])
        if args.validate and args.format == "bioimageio":
            from napari_peft_sam.core.bioimageio_export import validate_package

            summary = validate_package(recipe["path"])
            print(summary.format())
            return 0 if summary.status == "passed" else 1
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
