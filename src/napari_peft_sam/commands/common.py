"""Flags shared by several subcommands, generated from the one description of each.

Training flags come from :class:`~napari_peft_sam.core.config.TrainConfig`'s
knobs; a flag left out stays unset, so the base model's recipe applies
(``core.recipes.resolve``), exactly as in the GUI.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_data_arguments(parser: argparse.ArgumentParser, split: bool = True) -> None:
    """The data-source flags of data, train and evaluate (``core.options.DATA``)."""
    from napari_peft_sam.core import options

    group = options.add_group(parser, "data", options.DATA)
    if split:
        group.add_argument(
            "--split",
            choices=["train", "val", "test", "all"],
            help="a benchmark's split (default test), or a part of own data's seeded "
            "split (default all images given)",
        )


def has_data(args: argparse.Namespace) -> bool:
    from napari_peft_sam.core.errors import UserError

    named, files = args.dataset is not None, bool(args.images or args.labels)
    if named and files:
        raise UserError(
            "Pass either --dataset NAME or --images and --labels, not both."
        )
    if files and not (args.images and args.labels):
        raise UserError("Pass both --images and --labels.")
    return named or files


def data_spec(args: argparse.Namespace):
    """The DataSpec the flags describe (unset flags keep DataSpec's defaults)."""
    from napari_peft_sam.core import options
    from napari_peft_sam.core.config import DataSpec

    return DataSpec(**options.values(args, options.DATA))


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The base-model flags of train and evaluate (``core.options.MODEL``)."""
    from napari_peft_sam.core import options

    options.add_group(parser, "model", options.MODEL)


def parse_sets(pairs: list[str] | None) -> dict[str, str]:
    """``--set KEY=VALUE`` pairs as a dict (values are parsed by the knobs)."""
    from napari_peft_sam.core.errors import ConfigError

    values = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE, got {pair!r}.")
        values[key.strip()] = value.strip()
    return values


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per training setting, from TrainConfig's description."""
    from napari_peft_sam.core.config import TrainConfig
    from napari_peft_sam.core.knobs import flag

    basic = parser.add_argument_group(
        "training (unset flags take the base model's recipe, see `models`)"
    )
    advanced = parser.add_argument_group("training, advanced")
    for name, (knob, default) in TrainConfig.knobs().items():
        group = advanced if knob.advanced else basic
        flags = [flag(name), *knob.flags]
        shown = "none" if default is None else default
        # argparse formats help with %: a literal one (like "5 %") must be doubled
        text = f"{knob.help} [{knob.describe_range()}; default {shown}]".replace(
            "%", "%%"
        )
        if knob.kind == "bool":
            group.add_argument(
                *flags, dest=name, action=argparse.BooleanOptionalAction, help=text
            )
        else:
            metavar = "|".join(knob.choices) if knob.kind == "choice" else name.upper()
            group.add_argument(*flags, dest=name, metavar=metavar, help=text)


def explicit_train(args: argparse.Namespace) -> dict[str, Any]:
    """The training settings the user gave on the command line."""
    from napari_peft_sam.core.config import TrainConfig

    return {
        name: getattr(args, name)
        for name in TrainConfig.knobs()
        if getattr(args, name, None) is not None
    }
