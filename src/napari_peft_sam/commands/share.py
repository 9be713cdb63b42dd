"""``export``: a run for micro-sam, its annotator, or the bioimage.io model zoo."""

from __future__ import annotations

import json

from .base import Command


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
            help="output .pt file (ending in / : a file in that folder); for bioimageio a "
            ".zip file or a folder",
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
        extra = (
            "" if args.format == "bioimageio" else f" (recipe in {recipe['path']}.json)"
        )
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
