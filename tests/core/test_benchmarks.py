"""Benchmark datasets through torch_em's real download code, against a local server."""

import hashlib
import http.server
import socket
import threading
import zipfile

import h5py
import numpy as np
import pytest
from torch_em.data.datasets.light_microscopy import covid_if

from napari_peft_sam.core.benchmarks import DATA_ENV, benchmark_dataset
from napari_peft_sam.core.errors import UserError


@pytest.fixture
def covid_if_server(tmp_path, monkeypatch):
    """Serve a small Covid-IF-shaped zip (14 samples) on 127.0.0.1 and count GETs."""
    archive = tmp_path / "covid-if.zip"
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(archive, "w") as zf:
        for k in range(14):
            h5 = tmp_path / f"gt_image_{k:03}.h5"
            labels = np.zeros((48, 48), np.uint32)
            labels[5:20, 5:20], labels[25:40, 22:44] = 1, 2
            with h5py.File(h5, "w") as f:
                f["raw/serum_IgG/s0"] = rng.integers(0, 4000, (48, 48)).astype(
                    np.uint16
                )
                f["labels/cells/s0"] = labels
            zf.write(h5, h5.name)
    payload = archive.read_bytes()
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/covid-if-groundtruth.zip"
    monkeypatch.setattr(covid_if, "COVID_IF_URL", url)
    monkeypatch.setattr(covid_if, "CHECKSUM", hashlib.sha256(payload).hexdigest())
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "cache"))
    yield requests
    server.shutdown()


def test_benchmark_downloads_once_then_reuses_the_cache(covid_if_server, tmp_path):
    val = benchmark_dataset("covid_if", "val")
    assert len(val) == 3 and val.n_objects == 6  # samples 10-12, as in the study
    assert [s.name for s in val] == [f"gt_image_{k:03}.h5" for k in (10, 11, 12)]
    train = benchmark_dataset("covid_if", "train")
    test = benchmark_dataset("covid_if", "test")
    assert (len(train), len(test)) == (10, 1)
    assert len(covid_if_server) == 1  # one download, then the cache
    assert (tmp_path / "cache" / "covid_if" / "gt_image_000.h5").is_file()


def test_offline_error_names_the_cache_folder_and_leaves_no_half_folder(
    tmp_path, monkeypatch
):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(covid_if, "COVID_IF_URL", f"http://127.0.0.1:{port}/x.zip")
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "cache"))
    with pytest.raises(UserError) as info:
        benchmark_dataset("covid_if", "train")
    message = str(info.value)
    assert "'covid_if'" in message and str(tmp_path / "cache" / "covid_if") in message
    assert "place its files there" in message
    # torch_em would take a leftover folder for downloaded data: none is left
    assert not (tmp_path / "cache" / "covid_if").exists()


def test_mitolab_needs_files_placed_by_hand(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "cache"))
    with pytest.raises(UserError, match="mitolab_glycolytic_muscle.*place its files"):
        benchmark_dataset("mitolab_glycolytic_muscle", "train")
