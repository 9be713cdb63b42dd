"""``sweep`` and ``report``: grids of runs into the results store, and its tables."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from .base import Command
from .common import parse_sets

# error classes whose failures are the user's to fix (exit 2, not 1)
USER_ERRORS = (
    "UserError",
    "ConfigError",
    "ModelNotAvailableError",
    "MethodUnavailableError",
    "TrainingError",
)


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
            "--name", help="the sweep's name in the store (default: the spec's)"
        )
        parser.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="override a fixed setting, e.g. --set iterations=200",
        )
        from napari_peft_sam.core.executors import EXECUTORS

        parser.add_argument("--executor", choices=list(EXECUTORS), default="inline")
        parser.add_argument("--workers", type=int, default=1)
        parser.add_argument(
            "--seeds",
            type=int,
            help="training seeds per grid point, each its own run (default: the spec's, 1)",
        )
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
            help="seconds without heartbeat (the lease) before a running trial counts as lost",
        )
        from napari_peft_sam.core import options

        slurm = options.add_group(parser, "slurm", options.SLURM)
        slurm.add_argument("--no-wait", action="store_true", help="submit and return")
        jobs = parser.add_argument_group("jobs submitted earlier (after a restart)")
        jobs.add_argument("--status", action="store_true", help="show the sweep's jobs")
        jobs.add_argument(
            "--cancel", action="store_true", help="cancel the sweep's jobs"
        )

    def run(self, args):
        from napari_peft_sam.core import signals
        from napari_peft_sam.core.events import StopToken
        from napari_peft_sam.core.worker import STOPPED_BY

        # inline, this process is the worker: a signal while the spec is read
        # and its grid expanded stops the sweep as one during a point does
        inline = args.executor == "inline" and not (args.status or args.cancel)
        stop, restore = StopToken(), lambda: None
        STOPPED_BY.clear()
        if inline and not args.search:
            restore = signals.install(stop, on_first=STOPPED_BY.append)
        try:
            return self._run(args, stop)
        except KeyboardInterrupt:  # Ctrl-C after a first signal: stopped at once
            if not STOPPED_BY:
                raise
            return _stopped(STOPPED_BY[0])
        finally:
            restore()

    def _run(self, args, stop) -> int:
        from napari_peft_sam.core.presets import preset
        from napari_peft_sam.core.sweep import SweepSpec
        from napari_peft_sam.core.worker import STOPPED_BY

        spec = preset(args.preset) if args.preset else SweepSpec.load(args.config)
        overrides = parse_sets(args.set)
        changes = {"fixed": {**spec.fixed, **coerce_numbers(overrides)}}
        if args.seeds is not None:
            changes["seeds"] = args.seeds
        if args.name is not None:
            changes["name"] = args.name
        spec = SweepSpec.from_dict({**spec.__dict__, **changes})
        _check_places(args)
        if STOPPED_BY:  # while the grid was expanded and checked
            return _stopped(STOPPED_BY[0])
        # a database that stops answering anywhere (queue, heartbeat, the
        # final table): one sentence; the same command resumes the sweep
        with _store_errors(args.storage):
            if args.status or args.cancel:
                return self._manage(args, spec)
            return self._sweep(args, spec, stop)

    @staticmethod
    def _sweep(args, spec, stop) -> int:
        from napari_peft_sam.core import executors, results
        from napari_peft_sam.core.search import run_search
        from napari_peft_sam.core.worker import STOPPED_BY

        if args.search:
            study = run_search(args.storage, spec, args.search, args.runs)
            table = results.rows(args.storage, [study.study_name])
            print(results.markdown(table))
            return _outcome(table)
        jobs = executors.launch(
            spec,
            args.storage,
            args.runs,
            args.executor,
            args.workers,
            args.grace,
            vars(args),
            stop=stop if args.executor == "inline" else None,
        )
        if args.no_wait and args.executor != "inline":
            print("submitted jobs " + ", ".join(j.job_id for j in jobs))
            return 0
        try:
            executors.wait(jobs, report=lambda text: print(text, file=sys.stderr))
        finally:  # a frame the database driver keeps holds this list: let the
            # jobs go now, not at the exit (where LocalJob.__del__ fails)
            jobs.clear()
        table = results.rows(args.storage, [spec.name])
        print(results.markdown(table))
        if STOPPED_BY:  # SIGINT or SIGTERM: the running point is queued again
            return _stopped(STOPPED_BY[0])
        return _outcome(table)

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


@contextlib.contextmanager
def _store_errors(storage: str):
    """A store that cannot be written (read-only, full) or a database that
    stopped answering: one sentence; a rerun resumes the sweep."""
    import errno
    import traceback

    from napari_peft_sam.core.errors import UserError
    from napari_peft_sam.core.store import database_error, redact

    try:
        yield
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        raise UserError(
            f"Cannot write the results store {redact(storage)} ({error.strerror}); "
            "free space or pick a writable --storage, then run the sweep again."
        ) from None
    except UserError:
        raise
    except Exception as error:
        if not database_error(error):
            raise
        # the failed frames hold the local jobs: let them go now, not at the
        # interpreter's exit (where submitit's LocalJob.__del__ fails)
        traceback.clear_frames(error.__traceback__)
        raise UserError(
            f"The results database {redact(storage)} stopped answering "
            f"({type(error).__name__}); start it again and rerun the sweep to resume."
        ) from None


def _stopped(signum: int) -> int:
    """Say that a signal stopped the sweep; 128 + the first signal's number."""
    import signal

    print(
        f"error: the sweep was stopped by {signal.Signals(signum).name}; run the "
        "same command again to finish its points.",
        file=sys.stderr,
    )
    return 128 + signum


def coerce_numbers(values: dict[str, str]) -> dict:
    import yaml

    from napari_peft_sam.core.errors import UserError

    out = {}
    for key, text in values.items():
        try:
            out[key] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserError(
                f"--set {key}={text} is not a valid value (numbers, words, [lists])."
            ) from None
    return out


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
        parser.add_argument(
            "--overwrite", action="store_true", help="replace an existing --out"
        )

    def run(self, args):
        from napari_peft_sam.core import results

        if args.heatmap:
            from napari_peft_sam.core.heatmap import check_target

            check_target(args.out, args.overwrite, args.storage)
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
            from napari_peft_sam.core import catalog

            catalog.get(args.heatmap[0])
            results.heatmap(table, *args.heatmap, args.out)
            print(f"heatmap: {args.out}", file=sys.stderr)
        return 0


def _check_places(args) -> None:
    from napari_peft_sam.core.errors import UserError

    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}.")
    if args.search is not None and args.search < 1:
        raise UserError(f"--search must be at least 1 trial, got {args.search}.")
    if Path(args.runs).exists() and not Path(args.runs).is_dir():
        raise UserError(
            f"--runs {args.runs} is a file; pass a folder for the run folders."
        )


def _outcome(table: list[dict]) -> int:
    """0 if every point completed; else the first failure's reason, exit 2 or 1.

    Points whose worker was lost or stopped are left out: a resume reruns them.
    """
    failed = [
        r
        for r in table
        if r["status"] != "complete"
        and r.get("error")
        and not str(r["error"]).startswith(("worker lost", "stopped"))
    ]
    if not any(r["status"] == "complete" for r in table):
        if not failed:
            print("error: the sweep ran no point.", file=sys.stderr)
            return 1
        error = str(failed[0]["error"])
        print(
            f"error: no point of the sweep succeeded; the first failed with: {error}",
            file=sys.stderr,
        )
    elif failed:
        error = str(failed[0]["error"])
        print(
            f"error: {len(failed)} of {len(table)} points of the sweep failed; "
            f"the first with: {error}",
            file=sys.stderr,
        )
    else:
        return 0
    return 2 if error.split(":")[0] in USER_ERRORS else 1
