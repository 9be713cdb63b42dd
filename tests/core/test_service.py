"""The model service over its real connection, without Qt: the protocol and its ops."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from multiprocessing.connection import Listener

import numpy as np
import pytest

from napari_peft_sam.core import requests as r
from napari_peft_sam.core.sources import sample_dataset


class Service:
    """A minimal client: start the process, send requests, collect replies."""

    def __init__(self) -> None:
        key = secrets.token_bytes(16)
        listener = Listener(authkey=key)
        env = dict(os.environ, NAPARI_PEFT_SAM_SERVICE_KEY=key.hex())
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "napari_peft_sam.core.service",
                "--address",
                listener.address,
            ],
            env=env,
        )
        self.conn = listener.accept()
        listener.close()
        self.n = 0

    def send(self, request) -> int:
        self.n += 1
        self.conn.send((self.n, request))
        return self.n

    def collect(self, job: int, on_event=None):
        events = []
        while True:
            number, kind, payload = self.conn.recv()
            assert number == job
            if kind == "event":
                events.append(payload)
                if on_event:
                    on_event(payload)
                continue
            return kind, payload, events

    def call(self, request):
        return self.collect(self.send(request))

    def close(self) -> None:
        self.conn.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def service():
    s = Service()
    yield s
    s.close()


def test_catalog_and_shape_only_counts(service):
    kind, catalog, _ = service.call(r.Catalog())
    assert kind == "done"
    assert {"lora", "fact", "adaptformer"} <= {m["method"] for m in catalog["methods"]}
    assert {"demo", "tiny", "vit_b"} <= set(catalog["models"])
    assert "demo" in catalog["presets"]
    lora = {"method": "lora", "rank": 32}
    kind, counts, _ = service.call(r.DescribeModel("vit_b", lora, {}))
    assert counts["encoder_trainable"] == 1_179_648  # micro-sam's table
    kind, small, _ = service.call(r.DescribeModel("vit_b", lora, {"n_objects": 5}))
    kind, many, _ = service.call(r.DescribeModel("vit_b", lora, {"n_objects": 400}))
    # the encoder's transient bounds the step until the decoder's objects outgrow it
    assert small["memory_mb"] <= counts["memory_mb"] < many["memory_mb"]


def test_user_errors_come_back_as_sentences(service):
    bad = {
        "kind": "arrays",
        "images": [np.zeros((64, 64))],
        "labels": [np.ones((32, 32), np.int32)],
    }
    kind, (message, user), _ = service.call(r.InspectData(bad))
    assert kind == "error" and user and "differ in shape" in message
    kind, (message, user), _ = service.call(
        r.DescribeModel("vit_b", {"method": "lora", "rank": 0}, {})
    )
    assert kind == "error" and user and "rank" in message
    kind, (message, user), _ = service.call(object())
    assert kind == "error" and "cannot serve" in message
    kind, summary, _ = service.call(r.InspectData({"kind": "named", "name": "nuclei"}))
    assert kind == "done" and summary["images"] == 12  # the service lives on


def test_prompts_on_a_kept_image(service):
    sample = sample_dataset("nuclei")[0]
    service.call(r.SetImage("k", sample.image))
    ids, counts = np.unique(sample.labels[sample.labels > 0], return_counts=True)
    ys, xs = np.nonzero(sample.labels == ids[np.argmax(counts)])
    kind, mask, _ = service.call(
        r.Segment(
            {"name": "demo"},
            "k",
            points=np.array([[xs.mean(), ys.mean()]], np.float32),
            labels=np.array([1]),
        )
    )
    assert kind == "done" and mask.shape == sample.labels.shape and mask.sum() > 20
    kind, (message, user), _ = service.call(r.Segment({"name": "demo"}, "gone"))
    assert kind == "error" and user
    kind, result, _ = service.call(r.Automatic({"name": "demo"}, "k"))
    assert kind == "done" and result["kind"] == "amg"  # the base model has no decoder
    assert result["labels"].shape == sample.labels.shape
    # the filters it used, for the readout when nothing passes them
    assert result["settings"] == {
        "pred_iou_thresh": 0.88,
        "stability_score_thresh": 0.95,
    }


def test_stop_ends_training_with_a_checkpoint(service, tmp_path):
    config = {
        "data": {"dataset": "nuclei"},
        "model": {"name": "tiny"},
        "method": {"method": "lora", "rank": 2},
        "train": {"iterations": 5000, "checkpoint_interval": 5, "val_interval": 1000},
    }
    job = service.send(r.Train(config, str(tmp_path / "run")))

    def stop_after_steps(event):
        if getattr(event, "kind", "") == "step" and event.step == 8:
            service.conn.send((job, None))

    kind, result, events = service.collect(job, stop_after_steps)
    assert kind == "done" and result["status"] == "stopped"
    assert 8 <= result["iterations"] < 5000
    assert (tmp_path / "run" / "adapter_latest.pt").exists()
    assert any(getattr(e, "kind", "") == "checkpoint" for e in events)
