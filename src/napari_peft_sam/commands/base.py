"""The shape of a subcommand (optuna's CLI shape)."""

from __future__ import annotations

import argparse
from typing import ClassVar


class Command:
    """A subcommand: a name, a one-line help, its arguments and its action."""

    name: ClassVar[str]
    help: ClassVar[str]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare this command's flags."""

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError
