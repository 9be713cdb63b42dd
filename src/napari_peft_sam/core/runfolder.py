"""A run folder has one owner at a time, and its card is never overwritten blindly.

- :class:`RunFolder` is held by the process that trains into a folder: an
  exclusive ``fcntl`` lock on ``.owner.lock``, which the kernel releases when
  the process ends however it ends (a kill leaves no stale lock). A second
  run into the same folder is refused with one sentence. A new run only goes
  into a folder that does not exist or is empty: nothing the user had is
  overwritten. A folder the run created is removed again if the run fails
  before it wrote anything worth keeping.
- :func:`update_card` is the only way to change a card: read, merge, write
  atomically, under a short lock on ``.card.lock``, so an ``evaluate`` during
  training and the training's own updates never erase each other.

Torch-free. On platforms without ``fcntl`` (Windows) the locks are skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import atomic_write_json

CARD = "card.json"
CARD_FORMAT = "napari-peft-sam/run-card"
OWNER_LOCK = ".owner.lock"
CARD_LOCK = ".card.lock"


def _flock(path: Path, blocking: bool):
    """An open, exclusively locked file, or None if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one owner is not enforced
        return open(path, "a")  # noqa: SIM115
    handle = open(path, "a")  # noqa: SIM115  (closed by the caller)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextlib.contextmanager
def card_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the card's lock for a read-modify-write."""
    try:
        handle = _flock(Path(run_dir) / CARD_LOCK, blocking=True)
    except OSError as error:  # a read-only folder: nobody else can write either
        if error.errno not in (13, 30):  # EACCES, EROFS
            raise
        yield
        return
    try:
        yield
    finally:
        handle.close()


def read_card(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run card of ``run_dir``; a missing or malformed card is a UserError."""
    path = Path(run_dir) / CARD
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder: it has no {CARD}.")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise UserError(f"{path} is not a napari-peft-sam run card.")
    missing = [k for k in ("base_model", "method") if not isinstance(card.get(k), dict)]
    if missing:
        raise UserError(f"{path} is damaged: it has no {missing[0]!r}.")
    _check_base_model(path, card["base_model"])
    if "run_config" in card and not isinstance(card["run_config"], dict):
        raise UserError(f"{path} is damaged: its 'run_config' is not a mapping.")
    if card.get("status") == "running" and owned(run_dir) is False:
        card["status"] = KILLED  # its owner ended without saying how: a kill
    return card


# The base model's record in a card (``core.models.BaseModelInfo``'s fields).
BASE_MODEL_KEYS = {
    "name": str,
    "architecture": str,
    "source": str,
    "checkpoint": (str, type(None)),
    "hash": (str, type(None)),
    "image_size": int,
    "extra": dict,
}
KILLED = "killed"


def _check_base_model(path: Path, base: dict) -> None:
    for key, kind in BASE_MODEL_KEYS.items():
        if not isinstance(base.get(key), kind) or key not in base:
            raise UserError(
                f"{path} is damaged: its base_model has no valid {key!r}; restore "
                "the card from a copy or train the run again."
            )
    extra = sorted(set(base) - set(BASE_MODEL_KEYS))
    if extra:
        raise UserError(
            f"{path} is damaged: its base_model has an unknown entry {extra[0]!r}; "
            "remove it or restore the card from a copy."
        )


def owned(run_dir: str | os.PathLike) -> bool | None:
    """Whether a live process trains into ``run_dir`` now (it holds the owner
    lock); None where that cannot be told (no ``fcntl``, an unreadable lock)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        handle = open(Path(run_dir) / OWNER_LOCK, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return False
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def update_card(
    run_dir: str | os.PathLike, change: Callable[[dict[str, Any]], None] | dict
) -> dict[str, Any]:
    """Apply ``change`` (a dict to merge, or a function that edits the card in
    place) to the current card under the card lock; returns the new card."""
    run_dir = Path(run_dir)
    with card_lock(run_dir):
        card = read_card(run_dir) if (run_dir / CARD).exists() else {}
        if callable(change):
            change(card)
        else:
            card.update(change)
        try:
            atomic_write_json(run_dir / CARD, card)
        except OSError as error:
            raise UserError(
                f"The run card in {run_dir} could not be updated "
                f"({error.strerror or error}); free disk space or fix the folder's "
                "permissions."
            ) from None
    return card


class RunFolder:
    """Ownership of a run folder for the duration of a training run.

    Parameters
    ----------
    path
        The run folder.
    resume
        Continue the run in ``path`` (its card must exist); otherwise ``path``
        must not exist or be empty.
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False) -> None:
        self.path, self.resume = Path(path), resume
        self.created = False
        self._handle = None

    def __enter__(self) -> RunFolder:
        try:
            if (self.path / CARD).is_file():  # a run's folder: is it training now?
                self._take()
            self._check()
            if not self.path.exists():
                self._create()
            if self._handle is None:
                self._take()
        except BaseException as error:
            self.release(error)
            raise
        return self

    def _create(self) -> None:
        try:
            self.path.mkdir(parents=True)
        except OSError as error:
            raise UserError(
                f"Cannot create the run folder {self.path} ({error.strerror or error})."
            ) from None
        self.created = True

    def _take(self) -> None:
        try:
            self._handle = _flock(self.path / OWNER_LOCK, blocking=False)
        except OSError as error:  # a read-only file system, no permission
            raise UserError(
                f"Cannot write into the run folder {self.path} "
                f"({error.strerror or error}); make it writable or choose another "
                "--out (nothing was changed)."
            ) from None
        if self._handle is None:
            raise UserError(
                f"{self.path} is in use by another training run; wait for it to "
                "end or choose another --out."
            )

    def _check(self) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise UserError(f"{path} is a file, not a folder; choose another --out.")
        if self.resume:
            if not (path / CARD).is_file():
                raise UserError(f"{path} holds no run to resume (no {CARD}).")
            return
        if (path / CARD).exists():
            raise UserError(
                f"{path} already holds a run; pass --resume to continue it, or "
                "choose a new --out."
            )
        if path.is_dir() and any(
            p.name not in (OWNER_LOCK, CARD_LOCK) for p in path.iterdir()
        ):
            raise UserError(
                f"{path} already holds files; choose an empty or new folder for "
                "--out (nothing there was changed)."
            )

    def __exit__(self, kind, error, tb) -> None:
        self.release(error)

    def release(self, error=None) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if error is not None and self.created and not (self.path / CARD).exists():
            self._remove()

    def _remove(self) -> None:
        """Remove a folder this run created and filled with nothing worth keeping."""
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)
