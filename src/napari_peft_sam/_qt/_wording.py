"""The GUI's wording of core's sentences for the Train and Sweep docks.

Core's refusals name what to change as the command line spells it ("pass
--gpus 2", "use --executor local", "(--n-objects 4)"); the CLI prints them as
they are. A dock shows :func:`gui_sentence` instead: the field to change,
labelled as the dock labels it. SLURM fields come from ``core.options``'
table, as the Sweep dock's editors do.
"""

from __future__ import annotations

import re

from ..core.executors import EXECUTORS
from ..core.options import SLURM

# a flag and its value in brackets after the field's own name: "set n objects
# to 4 (--n-objects 4)", "the validation fraction (--val-fraction)"
_BRACKETED = re.compile(r" \(--[a-z][a-z-]*(?: [^(),;]*)?\)")


def _rules() -> list[tuple[re.Pattern, str]]:
    local = EXECUTORS["local"].title
    rules = [
        (
            r"the validation fraction \(--val-fraction\) or the split seed "
            r"\(--split-seed\)",
            "the validation share under Data",
        ),
        (_BRACKETED.pattern, ""),
        (r"use --executor local", f"choose '{local}' under 'run on'"),
        (r"use --device cpu", "set device to cpu under Train"),
        (r"or use --search N", "or give fewer values or seeds per point"),
        (
            r"pick a new name with `sweep --name NEW` or another --storage",
            "choose 'custom (from Data and Model)' to run these settings as a "
            "new sweep",
        ),
        (
            r"pass (?:--model \S+ )?--checkpoint FILE",
            "choose 'custom checkpoint…' under Model and method and give the file",
        ),
        (r"check --model", "check the base model under Model and method"),
    ]
    for option in SLURM:  # "pass --gpus 2 (or another --partition)."
        rules += [
            (rf"pass {option.flag} (\S+?)(?=[ .,;)]|$)", rf"set {option.label} to \1"),
            (rf"another {option.flag}\b", f"another {option.label}"),
            (rf"{option.flag}\b", f"the '{option.label}' field"),
        ]
    return [(re.compile(pattern), text) for pattern, text in rules]


_RULES = _rules()


def gui_sentence(message: str) -> str:
    """``message`` with the CLI's flags replaced by the fields of the docks."""
    for pattern, text in _RULES:
        message = pattern.sub(text, message)
    return message
