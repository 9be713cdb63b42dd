"""GUI responsiveness: click-to-mask through the model service, and the event loop.

Under Xvfb, in napari with the plugin docked (as ``napari-peft-sam gui``):

1. click latency: a positive point is placed on the nuclei sample N times
   (each at another object); the time from the Points layer's data event to
   the first canvas draw after the mask was put into its Labels layer,
   including the round trip to the service process, and the canvas draws in
   between (goal: one). Measured in the same run: one canvas redraw with
   nothing changed (the goal is click p50 <= one redraw + 15 ms), and the
   same prompt through ``Segmenter.segment`` in this process (the cost of the
   process boundary, side by side);
2. event loop: the longest pause of a 10 ms Qt timer while a training run
   of the tiny model trains in its child process (target: < 100 ms).

    xvfb-run -a python benchmarks/bench_gui.py [--clicks 50] [--steps 60] [--save]

The last line is one JSON object, with the machine; ``--save`` writes
``results/gui_xvfb_<machine>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import machine
import numpy as np
import torch  # noqa: F401  (the in-process comparison needs it before the canvas)
import torchvision  # noqa: F401


def _canvas(viewer):
    """napari's vispy canvas (private; a benchmark may look)."""
    return viewer.window._qt_viewer.canvas._scene_canvas


def click_latencies(viewer, prompt, centres, clicks: int):
    """Seconds from placing a point to the first canvas draw showing its mask,
    and the number of canvas draws in between (the first click embeds the
    image and is left out)."""
    from napari_peft_sam._qt.launch import wait_for

    draws: list[float] = []
    _canvas(viewer).events.draw.connect(lambda _e: draws.append(time.perf_counter()))
    shown: list[float] = []
    show = prompt._show_mask

    def timed_show(*args):
        show(*args)
        shown.append(time.perf_counter())

    prompt._show_mask = timed_show
    latencies, counts = [], []
    for k in range(clicks + 1):
        shown.clear()
        started = time.perf_counter()
        viewer.layers["prompts"].data = [centres[k % len(centres)]]
        wait_for(
            lambda: shown and any(t > shown[-1] for t in draws), 300, poll_s=0.0005
        )
        drawn = next(t for t in draws if t > shown[-1])
        if k:
            latencies.append(drawn - started)
            counts.append(sum(started < t <= drawn for t in draws))
        wait_for(lambda: False, 0.05, poll_s=0.005)  # settle before the next click
    prompt._show_mask = show
    return latencies, counts


def redraw_times(viewer, repeats: int = 10) -> list[float]:
    """Seconds of one canvas redraw with nothing changed (software OpenGL here)."""
    from qtpy.QtWidgets import QApplication

    app, canvas = QApplication.instance(), _canvas(viewer)
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        canvas.update()
        app.processEvents()
        out.append(time.perf_counter() - started)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--save", action="store_true", help="write results/")
    args = parser.parse_args(argv)
    argv_ = sys.argv[1:] if argv is None else list(argv)
    os.environ.setdefault("NAPARI_PEFT_SAM_HOME", tempfile.mkdtemp())

    from qtpy.QtCore import QTimer

    from napari_peft_sam._qt.launch import launch, wait_for
    from napari_peft_sam.core.inference import Segmenter
    from napari_peft_sam.core.models import load_base_model

    viewer, w = launch(sample="nuclei", run=False)
    viewer.dims.set_current_step(0, 0)

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
    latencies, redraws_per_click = click_latencies(viewer, prompt, centres, args.clicks)
    redraws = redraw_times(viewer)

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
        "canvas_redraw_ms_p50": pct(redraws, 50),
        "click_p50_minus_one_redraw_ms": round(
            pct(latencies, 50) - pct(redraws, 50), 2
        ),
        "canvas_redraws_per_click_p50": float(np.median(redraws_per_click)),
        "service_round_trip_ms_p50": pct(prompt.latencies[1:], 50),
        "service_round_trip_ms_p95": pct(prompt.latencies[1:], 95),
        "click_ms_in_process_p50": pct(direct, 50),
        "click_ms_in_process_p95": pct(direct, 95),
        "event_loop_max_gap_ms": round(float(gaps.max()), 1),
        "event_loop_p99_gap_ms": round(float(np.percentile(gaps, 99)), 1),
        "train_steps_measured": args.steps,
        "clicks": args.clicks,
        "model": "demo (clicks), tiny (training)",
        "machine": {**machine.summary(), "display": "Xvfb, Mesa software OpenGL"},
        "command": " ".join(["xvfb-run -a python benchmarks/bench_gui.py", *argv_]),
    }
    if args.save:
        print(f"saved {machine.save('gui_xvfb', out)}", file=sys.stderr)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
