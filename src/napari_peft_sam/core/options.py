"""The one table of data, model and SLURM options (torch-free).

The CLI's flags (``commands/common.py``, ``sweep``'s slurm group), the
``napari-peft-sam train`` call a run card records (``RunConfig.command``),
the SLURM submission (``core.executors``) and the Sweep widget's SLURM
options are generated from these rows, so a new option is one row here. Data rows are ``DataSpec`` fields, model rows
``ModelSpec`` fields; SLURM rows are keys of a sweep's executor options.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    """One option: the field it sets, its flag and how the flag parses."""

    field: str
    help: str
    kind: str = "str"  # str | int | float | list (one or more) | switch | append
    name: str | None = None  # the flag's name when it differs from the field's
    default: Any = None  # the CLI's default (None: unset, the spec's default applies)
    submitit: str | None = None  # SLURM rows: submitit's parameter
    title: str | None = None  # the GUI's label when it differs from the field's
    low: int | None = None  # int rows: the smallest value a GUI editor offers

    @property
    def label(self) -> str:
        """How the GUI labels the option (``array_parallelism`` -> its title)."""
        return self.title or self.field.replace("_", " ")

    @property
    def dest(self) -> str:
        """Where argparse puts the value (the flag's name)."""
        return self.name or self.field

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")

    def add_to(self, group) -> None:
        """Add the flag to an argparse parser or group."""
        kwargs: dict[str, Any] = {"dest": self.dest, "help": self.help}
        if self.kind == "switch":
            kwargs["action"] = "store_true"
        elif self.kind == "append":
            kwargs["action"] = "append"
        elif self.kind == "list":
            kwargs["nargs"] = "+"
        else:
            kwargs["type"] = {"str": str, "int": int, "float": float}[self.kind]
        if self.default is not None:
            kwargs["default"] = self.default
        group.add_argument(self.flag, **kwargs)

    def args(self, value: Any) -> list[str]:
        """The command-line words that set ``value`` (none for an unset one)."""
        if value is None or value is False:
            return []
        if self.kind == "switch":
            return [self.flag]
        if self.kind in ("list", "append"):
            return [self.flag, *map(str, value)]
        return [self.flag, str(value)]


DATA = (
    Option(
        "dataset",
        "sample data (nuclei, organoids) or a benchmark (orgasegment, livecell, "
        "covid_if, mitolab_glycolytic_muscle, platy_cilia)",
    ),
    Option("images", "image folder(s), glob(s) or file(s)", "list"),
    Option("labels", "label folder(s), glob(s) or file(s)", "list"),
    Option("image_key", "dataset inside zarr/hdf5 image files"),
    Option("label_key", "dataset inside zarr/hdf5 label files"),
    Option("stack", "treat 3D arrays as stacks of 2D planes", "switch"),
    Option(
        "val_fraction",
        "share of own images held out for validation and testing (default 0.2)",
        "float",
    ),
    Option("split_seed", "seed of the held-out split (default 0)", "int"),
)
# DataSpec fields that are no flag: set by the annotate-retrain loop
DATA_NOT_FLAGS = ("annotation",)

MODEL = (
    Option("name", "base model name (see `models`)", name="model"),
    Option("checkpoint", "custom weights for the model's architecture"),
    Option("image_size", "model input size (default: the model's)", "int"),
)

SLURM = (
    Option(
        "partition",
        "SLURM partition (default: the cluster's)",
        submitit="slurm_partition",
    ),
    Option(
        "gpus",
        "per job (default: 1 where the partition has GPUs)",
        "int",
        submitit="gpus_per_node",
        title="GPUs per job",
        low=0,
    ),
    Option(
        "time",
        "minutes per job",
        "int",
        default=240,
        submitit="timeout_min",
        title="time limit (min)",
        low=1,
    ),
    Option(
        "mem",
        "GB per job (default: 32, or what a node has)",
        "int",
        submitit="mem_gb",
        title="memory (GB)",
        low=1,
    ),
    Option(
        "cpus",
        "per job (default: 8, or what a node has)",
        "int",
        submitit="cpus_per_task",
        title="CPUs per job",
        low=1,
    ),
    Option("setup", "shell line run before the job", "append", submitit="slurm_setup"),
    Option(
        "array_parallelism",
        "jobs running at once",
        "int",
        default=4,
        submitit="slurm_array_parallelism",
        title="jobs at once",
        low=1,
    ),
)


def add_group(parser: argparse.ArgumentParser, title: str, rows) -> Any:
    """An argument group holding the flags of ``rows``."""
    group = parser.add_argument_group(title)
    for option in rows:
        option.add_to(group)
    return group


def values(args: argparse.Namespace, rows) -> dict[str, Any]:
    """The fields the parsed flags set (unset ones left out)."""
    out = {}
    for option in rows:
        value = getattr(args, option.dest, None)
        if value is not None and value is not False:
            out[option.field] = value
    return out


def default(field: str) -> Any:
    """A SLURM row's default (``time``, ``array_parallelism``)."""
    return next(o.default for o in SLURM if o.field == field)
