"""The ``napari-peft-sam`` command line.

Each subcommand is a small class with ``add_arguments`` and ``run`` (optuna's
CLI shape) in ``napari_peft_sam.commands``. Heavy imports happen inside
``run`` so that ``--help`` is instant (no torch, no micro-sam).
Exit codes: 0 success, 2 a user error (one sentence on stderr), 1 anything
else.
"""

from __future__ import annotations

import argparse
import sys

from napari_peft_sam.commands.app import DemoCommand, GuiCommand
from napari_peft_sam.commands.base import Command
from napari_peft_sam.commands.info import MethodsCommand, ModelsCommand
from napari_peft_sam.commands.run import DataCommand, EvaluateCommand, TrainCommand
from napari_peft_sam.commands.share import ExportCommand
from napari_peft_sam.commands.sweep import ReportCommand, SweepCommand

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
