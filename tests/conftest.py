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


@pytest.fixture
def postgres_url():
    """A real PostgreSQL server (Debian's), started for this test."""
    import tempfile

    pytest.importorskip("psycopg")
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not bins:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    tmp_path = Path(tempfile.mkdtemp(prefix="pg-"))  # pytest's tmp is root-only
    bin_dir, data, port = bins[-1], tmp_path / "pg", _free_port()
    user = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as 'postgres'
        shutil.chown(tmp_path, "postgres")
        user = ["runuser", "-u", "postgres", "--"]
    run = partial(subprocess.run, check=True, capture_output=True)
    run(
        [
            *user,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "sweeper",
        ]
    )
    run(
        [
            *user,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(tmp_path / "pg.log"),
            "-o",
            f"-p {port} -k {tmp_path} -c listen_addresses=127.0.0.1",
            "start",
        ]
    )
    try:
        run(
            [
                str(bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "sweeper",
                "sweeps",
            ]
        )
        yield f"postgresql://sweeper:unused@127.0.0.1:{port}/sweeps"
    finally:
        subprocess.run(
            [*user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
        )
        shutil.rmtree(tmp_path, ignore_errors=True)
