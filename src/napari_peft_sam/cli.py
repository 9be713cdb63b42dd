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
    group.add_argument("--split", default="train", choices=["train", "val", "test"])


def dataset_from_args(args: argparse.Namespace):
    from napari_peft_sam.core.data import load_dataset
    from napari_peft_sam.core.errors import UserError

    if (args.dataset is None) == (args.images is None and args.labels is None):
        raise UserError("Pass either --dataset NAME or both --images and --labels.")
    return load_dataset(
        args.dataset,
        args.images,
        args.labels,
        args.image_key,
        args.label_key,
        args.stack,
        args.split,
    )


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


COMMANDS: dict[str, type[Command]] = {
    c.name: c for c in (MethodsCommand, ModelsCommand, DataCommand, ExportCommand)
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
