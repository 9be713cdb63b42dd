"""Ctrl-C and SIGTERM (a SLURM time limit, ``scancel``) stop a run after its
current step, which is saved; a sweep's running point is queued again.

The first signal decides the record: the run card's status and the exit code
(128 + its number: 130 for SIGINT, 143 for SIGTERM) both name it. A later
SIGTERM changes nothing (the run is already stopping); a later Ctrl-C stops
at once (``KeyboardInterrupt``) and keeps the last checkpoint, and the record
still names the first signal.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

EXIT_SIGINT = 128 + signal.SIGINT


def exit_code(stop) -> int:
    """The exit code of a run stopped through ``stop``: its first signal's."""
    return 128 + getattr(stop, "signum", signal.SIGINT)


def install(
    stop,
    announce: Callable[[str], None] | None = None,
    on_first: Callable[[int], None] | None = None,
    chain_sigterm: bool = False,
) -> Callable[[], None]:
    """Let SIGINT and SIGTERM set ``stop`` (a StopToken); returns ``restore``.

    ``stop`` gets ``reason`` (the signal's name) and ``signum`` from the first
    signal. ``chain_sigterm`` also calls the SIGTERM handler found (a job
    system's). Outside the main thread nothing is installed.
    """
    if sys.platform == "win32" or threading.current_thread() is not (
        threading.main_thread()
    ):
        return lambda: None
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if previous[signal.SIGINT] is None:  # installed from outside Python
        return lambda: None

    def handle(signum, frame):
        if stop.is_set() and getattr(stop, "signum", None) is not None:
            if signum == signal.SIGINT:  # Ctrl-C again: stop at once
                raise KeyboardInterrupt
            return  # already stopping: the first signal decides
        stop.reason, stop.signum = signal.Signals(signum).name, signum
        stop.stop()
        if on_first is not None:
            on_first(signum)
        if announce is not None:
            announce(
                f"\n{stop.reason}: saving a checkpoint after this step "
                "(Ctrl-C again to stop at once)"
            )
        chained = previous[signal.SIGTERM]
        if chain_sigterm and signum == signal.SIGTERM and callable(chained):
            chained(signum, frame)

    for sig in previous:
        signal.signal(sig, handle)

    def restore():
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
