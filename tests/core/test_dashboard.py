"""optuna-dashboard reads the results store a sweep wrote (the journal file)."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from napari_peft_sam.core import catalog
from napari_peft_sam.core.sweep import SweepSpec
from napari_peft_sam.core.worker import run_worker
from tests.sweep_helpers import SPEC, fake_runner

pytest.importorskip("optuna_dashboard")

ROOT = Path(__file__).resolve().parents[2]
PYTHON_SERVER = """
import sys
import optuna_dashboard
from napari_peft_sam.core.store import open_storage
optuna_dashboard.run_server(open_storage(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 60.0):
    """JSON from ``url``, waiting for the server to come up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def command(how: str, journal: Path, port: int) -> list[str]:
    if how == "cli":  # what the user guide says to type
        cli = Path(sys.executable).parent / "optuna-dashboard"
        return [str(cli), str(journal), "--host", "127.0.0.1", "--port", str(port)]
    return [sys.executable, "-c", PYTHON_SERVER, str(journal), str(port)]


@pytest.mark.parametrize("how", ["cli", "python"])
def test_dashboard_serves_the_sweep_study_and_its_trials(tmp_path, how):
    journal = tmp_path / "results.journal"
    run_worker(
        str(journal), SweepSpec.from_dict(SPEC), tmp_path / "runs", runner=fake_runner
    )
    before = journal.read_bytes()
    port = free_port()
    server = subprocess.Popen(
        command(how, journal, port),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        studies = get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        study = next(s for s in studies if s["study_name"] == SPEC["name"])
        detail = get(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    trials = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(trials) == 6  # the 3 x 2 grid
    attrs = [{a["key"]: a["value"] for a in t["user_attrs"]} for t in trials]
    points = sorted(json.loads(a["values"])["rank"] for a in attrs)
    assert points == [1, 1, 2, 2, 4, 4]
    assert all(catalog.SINGLE_BOX.name in json.loads(a["metrics"]) for a in attrs)
    assert journal.read_bytes() == before  # reading the store never writes
