"""Shared fixtures. torch and torchvision are imported before any Qt/OpenGL
state exists: importing torchvision after napari made its OpenGL canvas
segfaults under Mesa software rendering."""

import os
import shutil
import socket
import subprocess
from functools import partial
from pathlib import Path

import pytest
import torch
import torchvision  # noqa: F401  (see module docstring)

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "/_qt/" in str(item.fspath):
            item.add_marker(pytest.mark.qt)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture
def tiny_sam():
    from napari_peft_sam.core.models import load_base_model

    sam, _ = load_base_model("tiny")
    return sam


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A real PostgreSQL server (Debian's) in a temporary folder; ``stop`` and
    ``start`` let a test take the database away mid-sweep and bring it back."""

    def __init__(self) -> None:
        import tempfile

        pytest.importorskip("psycopg")
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bins:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        self.tmp = Path(tempfile.mkdtemp(prefix="pg-"))  # pytest's tmp is root-only
        self.bin, self.data, self.port = bins[-1], self.tmp / "pg", _free_port()
        self.user = []
        if os.geteuid() == 0:  # initdb refuses root: run the server as 'postgres'
            shutil.chown(self.tmp, "postgres")
            self.user = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql://sweeper:unused@127.0.0.1:{self.port}/sweeps"

    def _ctl(self, *args: str, check: bool = True):
        command = [*self.user, str(self.bin / "pg_ctl"), "-D", str(self.data), *args]
        return subprocess.run(command, check=check, capture_output=True)

    def create(self) -> None:
        run = partial(subprocess.run, check=True, capture_output=True)
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust"]
        run([*self.user, *initdb, "-U", "sweeper"])
        self.start()
        host = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "sweeper"]
        run([str(self.bin / "createdb"), *host, "sweeps"])

    def start(self) -> None:
        options = f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1"
        self._ctl("-w", "-l", str(self.tmp / "pg.log"), "-o", options, "start")

    def stop(self, mode: str = "fast", check: bool = True) -> None:
        """Stop the server ('fast' ends every connection, as a shutdown does)."""
        self._ctl("-w", "-m", mode, "stop", check=check)

    def remove(self) -> None:
        self.stop(check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def postgres_server():
    """A running :class:`PostgreSQL server <PostgresServer>` for this test."""
    server = PostgresServer()
    try:
        server.create()
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a real PostgreSQL database, started for this test."""
    return postgres_server.url
