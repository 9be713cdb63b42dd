"""GUI responsiveness: click-to-mask through the model service, and the event loop.

Under Xvfb, in napari with the plugin docked (as ``napari-peft-sam gui``):

1. click latency: a positive point is placed on the nuclei sample N times
   (each at another object); the time from the Points layer's data event to
   the mask in the Labels layer, including the round trip to the service
   process, against the same prompt through ``Segmenter.segment`` in this
   process (the cost of the process boundary, side by side);
2. event loop: the longest pause of a 10 ms Qt timer while a training run
   of the tiny model trains in its child process (target: < 100 ms).

    xvfb-run -a python benchmarks/bench_gui.py [--clicks 50] [--steps 60]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch  # noqa: F401  (the in-process comparison needs it before the canvas)
import torchvision  # noqa: F401


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args(argv)
    os.environ.setdefault("NAPARI_PEFT_SAM_HOME", tempfile.mkdtemp())

    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_peft_sam._qt.launch import launch, wait_for
    from napari_peft_sam.core.inference import Segmenter
    from napari_peft_sam.core.models import load_base_model

    viewer, w = launch(sample="nuclei", run=False)
    viewer.dims.set_current_step(0, 0)
    app = QApplication.instance()

    def wait(condition, timeout_s=300.0):
        wait_for(condition, timeout_s, poll_s=0.0005)  # latency is measured

    prompt = w["Prompt tester"]
    wait(lambda: prompt.session.catalog is not None)
    prompt.image.setCurrentText("nuclei images")
    prompt.model.setCurrentText("demo")
    prompt.start()
    labels = viewer.layers["nuclei labels"].data[0]
    ids = [i for i in np.unique(labels) if i]
    centres = [np.argwhere(labels == i).mean(0) for i in ids]
    latencies = []
    for k in range(args.clicks + 1):
        before = len(prompt.latencies)
        started = time.perf_counter()
        viewer.layers["prompts"].data = [centres[k % len(centres)]]
        wait(
            lambda b=before: (
                len(prompt.latencies) > b and not prompt._busy.get("mask (model)")
            )
        )
        if k:  # the first click embeds the image
            latencies.append(time.perf_counter() - started)

    # what one canvas update costs here (software OpenGL under Xvfb)
    redraws = []
    mask_layer = viewer.layers["mask (model)"]
    for k in range(10):
        started = time.perf_counter()
        mask_layer.data = (labels == ids[k % len(ids)]).astype(np.int32)
        app.processEvents()
        redraws.append(time.perf_counter() - started)

    sam, _ = load_base_model("demo")
    segmenter = Segmenter(sam)
    image = prompt._plane(viewer.layers["nuclei images"])
    from napari_peft_sam.core.data import normalize_image

    image = normalize_image(image)
    segmenter.segment(image, np.array([centres[0][::-1]]), np.array([1]), key="x")
    direct = []
    for k in range(args.clicks):
        started = time.perf_counter()
        segmenter.segment(
            image, np.array([centres[k % len(centres)][::-1]]), np.array([1]), key="x"
        )
        direct.append(time.perf_counter() - started)

    model, train = w["Model and method"], w["Train"]
    model.model.setCurrentText("tiny")
    w["Data"].source.setCurrentText("napari layers")
    train.form.editors["iterations"].setValue(args.steps)
    ticks: list[float] = []
    timer = QTimer(interval=10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    train.start()
    wait(lambda: train.progress.value() >= 1)
    ticks.clear()
    wait(lambda: train.progress.value() >= args.steps)
    timer.stop()
    gaps = np.diff(ticks) * 1000
    wait(lambda: not train.running)
    prompt.session.close()

    def pct(values, q):
        return round(float(np.percentile(np.asarray(values) * 1000, q)), 2)

    out = {
        "click_ms_gui_p50": pct(latencies, 50),
        "click_ms_gui_p95": pct(latencies, 95),
        "service_round_trip_ms_p50": pct(prompt.latencies[1:], 50),
        "service_round_trip_ms_p95": pct(prompt.latencies[1:], 95),
        "mask_layer_update_ms_p50": pct(redraws, 50),
        "click_ms_in_process_p50": pct(direct, 50),
        "click_ms_in_process_p95": pct(direct, 95),
        "event_loop_max_gap_ms": round(float(gaps.max()), 1),
        "event_loop_p99_gap_ms": round(float(np.percentile(gaps, 99)), 1),
        "train_steps_measured": args.steps,
        "clicks": args.clicks,
        "model": "demo (clicks), tiny (training)",
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
