"""The results store: an Optuna storage holding one trial per run.

A journal file by default, or any database URL several machines share. Every
run (a sweep point, a GUI run, the demo's base-model row) is a trial whose
user attributes hold its :class:`~napari_peft_sam.core.runs.RunRecord`.

Reading never writes: ``open_storage(..., write=False)`` refuses a missing
file or a file that is not a journal (a CSV, random bytes) with one sentence,
creates no folder, repairs nothing and creates no study. Only a writer
repairs, and only a journal: a torn last line (a full disk, a power cut) is
cut off after the whole file has been copied to a backup beside it. No
password of a database URL reaches a message, a card or a table
(:func:`redact`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .errors import UserError


def redact(location: str) -> str:
    """A storage location without its password, for cards, logs and tables."""
    location = str(location)
    if "://" in location and "@" in location:
        scheme, rest = location.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else location
    return location


def redact_text(text: str, location: str) -> str:
    """``text`` with every occurrence of ``location``'s password replaced."""
    location = str(location)
    if "://" not in location or "@" not in location:
        return text
    credentials = location.split("://", 1)[1].rsplit("@", 1)[0]
    if ":" not in credentials:
        return text
    return text.replace(location, redact(location)).replace(
        credentials.split(":", 1)[1], "***"
    )


PASSWORD_ENV = "NAPARI_PEFT_SAM_DB_PASSWORD"


def without_password(location: str) -> tuple[str, str | None]:
    """``location`` without its password, and the password (None if it has none).

    Sweep workers get the first; the password travels in their environment
    (:data:`PASSWORD_ENV`), never in a job file.
    """
    if "://" not in location or "@" not in location:
        return location, None
    scheme, rest = location.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user, sep, password = credentials.partition(":")
    if not sep:
        return location, None
    return f"{scheme}://{user}@{host}", password


def _with_password(location: str) -> str:
    """Put the password from the environment back into a URL that lacks one."""
    password = os.environ.get(PASSWORD_ENV)
    if not password or "@" not in location:
        return location
    scheme, rest = location.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    if ":" in credentials:
        return location
    return f"{scheme}://{credentials}:{password}@{host}"


def is_url(location: str | Path) -> bool:
    return "://" in str(location)


def check_journal(path: Path) -> None:
    """Refuse a file that is not an Optuna journal, without changing it."""
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass the results file (results.journal).")
    with open(path, "rb") as f:
        first = f.readline(1 << 20)
    if not first:
        return  # an empty journal
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise UserError(
            f"{path} is not a results store (an Optuna journal); pass the "
            "results.journal a sweep or the GUI wrote, or a database URL."
        )


def _repair_torn_tail(path: Path) -> Path | None:
    """Cut an unfinished last line off a journal, after a backup; returns it."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() == 0:
            return None
        f.seek(-1, 2)
        if f.read(1) == b"\n":
            return None
    backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}.bak")
    shutil.copy2(path, backup)
    data = path.read_bytes()
    with open(path, "rb+") as f:
        f.truncate(data.rfind(b"\n") + 1)
    return backup


def open_storage(location: str | Path, write: bool = False):
    """The Optuna storage of ``location`` (a journal file or a database URL).

    With ``write=False`` nothing on disk changes: a missing file or one that
    is not a journal is refused. With ``write=True`` the file (and its
    folder) is created, and a torn last line is repaired after a backup.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    location = str(location)
    if is_url(location):
        return _database(location)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = Path(location)
    if path.exists():
        check_journal(path)
        if write:
            _repair_torn_tail(path)
    elif not write:
        raise UserError(f"There is no results store at {path}.")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return JournalStorage(
            JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        )
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        # AssertionError: Optuna's replay of an operation it does not know
        raise UserError(
            f"{path} is not a readable results store ({type(error).__name__}); "
            "it may be damaged in the middle."
        ) from None


def _database(location: str):
    from optuna.storages import RDBStorage

    location = _with_password(location)
    for attempt in range(5):  # workers starting together race to create the schema
        try:
            return RDBStorage(location, engine_kwargs={"pool_pre_ping": True})
        except ImportError:
            raise UserError(
                f"No database driver for {redact(location)}; pip install "
                "'psycopg[binary]' (PostgreSQL) or the driver of your database."
            ) from None
        except Exception as error:
            if attempt == 4:
                reason = redact_text(str(error).splitlines()[0][:200], location)
                raise UserError(
                    f"Cannot open the database {redact(location)} ({reason}); "
                    "check the host, the user and the password."
                ) from None
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def database_error(error: BaseException) -> bool:
    """Whether ``error``, or what caused it, is a database that stopped answering.

    SQLAlchemy raises its own errors; Optuna wraps some of them (a failed
    commit) in ``StorageInternalError``; a local or SLURM worker's failure
    comes back as submitit's ``FailedJobError`` holding the worker's traceback.
    """
    while error is not None:
        kind = type(error)
        if kind.__module__.split(".")[0] == "sqlalchemy" or kind.__name__ == (
            "StorageInternalError"
        ):
            return True
        if kind.__name__ == "FailedJobError" and any(
            name in str(error) for name in ("sqlalchemy.exc.", "StorageInternalError")
        ):
            return True
        error = error.__cause__ or (
            None if error.__suppress_context__ else error.__context__
        )
    return False


def study_names(storage) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(storage)]


def open_study(storage, name: str, create: bool = False, sampler=None, pruner=None):
    """The study ``name``; a reader (``create=False``) never creates one."""
    import optuna

    if not create:
        if name not in study_names(storage):
            known = ", ".join(study_names(storage)) or "none"
            raise UserError(
                f"The results store has no study {name!r} (it has: {known})."
            )
        return optuna.load_study(
            study_name=name,
            storage=storage,
            sampler=sampler or optuna.samplers.RandomSampler(seed=0),
            pruner=pruner or optuna.pruners.NopPruner(),
        )
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=sampler or optuna.samplers.RandomSampler(seed=0),
        pruner=pruner or optuna.pruners.NopPruner(),
    )


def add_record(location: str, study_name: str, attrs: dict[str, Any]) -> int:
    """Add a finished run's user attributes as a COMPLETE trial; returns its number."""
    import optuna

    study = open_study(open_storage(location, write=True), study_name, create=True)
    values = [v for v in attrs.get("metrics", {}).values() if v is not None]
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE,
        value=float(values[0]) if values else 0.0,
        user_attrs=attrs,
    )
    study.add_trial(trial)
    return len(study.get_trials(deepcopy=False)) - 1


def rows(location: str, studies: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per run: in a sweep's study (one with a spec's fingerprint) per
    grid point and seed the completed trial, else its last failure; elsewhere
    (GUI runs, retrains) every trial, however alike their settings; WAITING
    and duplicate trials are left out."""
    from optuna.trial import TrialState as S

    from .records import row_from_attrs

    storage = open_storage(location)
    out = []
    for name in studies or study_names(storage):
        study = open_study(storage, name)
        sweep = "fingerprint" in study.user_attrs  # claimed by a sweep or a search
        kept: dict[str, Any] = {}
        for t in study.get_trials(deepcopy=False):
            if t.user_attrs.get("duplicate") or t.state == S.WAITING:
                continue
            key = (sweep and t.user_attrs.get("point")) or f"#{t.number}"
            if kept.get(key) is None or kept[key].state != S.COMPLETE:
                kept[key] = t
        for t in sorted(kept.values(), key=lambda t: t.number):
            row = row_from_attrs(t.user_attrs, t.params)
            row |= {
                "study": name,
                "trial": t.number,
                "status": t.state.name.lower(),
                "storage": redact(location),
            }
            out.append(row)
    return out
