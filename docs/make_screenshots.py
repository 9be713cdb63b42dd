"""Regenerate the user guide's screenshots from a real session on the sample data.

    xvfb-run -a -s "-screen 0 1920x1080x24" python docs/make_screenshots.py [--out docs/images] [--quick]

It opens napari as ``napari-peft-sam gui`` does in a 1920x1080 window, checks
the organoid layers, fine-tunes the demo model with LoRA, runs a 2 x 2 sweep
here, prompts with a point next to the base model and segments an image
automatically. It saves the whole window at the start (start.png), after the
run (run_finished.png), with the Jobs list while the sweep runs (job_list.png) and
with the prompt tester comparing base and tuned model (comparison.png), then
one PNG per widget and the window at the end (window.png). Runs take a few
minutes on two CPU cores (``--quick`` shortens training for a smoke test).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

SCREEN = (1920, 1080)


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images")
    parser.add_argument("--quick", action="store_true", help="few steps (tests)")
    args = parser.parse_args(argv)
    os.environ.setdefault(
        "NAPARI_PEFT_SAM_HOME", tempfile.mkdtemp(prefix="peft-sam-docs-")
    )

    from napari_peft_sam._qt.launch import launch, wait_for

    viewer, w = launch(sample="organoids", run=False)
    viewer.window._qt_window.resize(*SCREEN)
    viewer.dims.set_current_step(0, 2)
    args.out.mkdir(parents=True, exist_ok=True)

    def wait(condition, timeout_s=900.0):
        if not wait_for(condition, timeout_s, poll_s=0.02):
            raise TimeoutError("the session did not reach the expected state")

    written = []

    def shot(name: str, *front: str) -> None:
        """The whole window as ``out/NAME.png``, the ``front`` docks raised."""
        for dock in front:
            docks[dock].raise_()
        wait_for(lambda: False, 0.5)  # let the docks paint
        viewer.reset_view()  # the whole image in the canvas as it is now
        wait_for(lambda: False, 0.2)
        written.append(args.out / f"{name}.png")
        viewer.screenshot(str(written[-1]), canvas_only=False)
        hint = viewer.window._qt_window.minimumSizeHint()
        print(f"{name}.png: the window's minimum {hint.width()}x{hint.height()}")

    docks = {
        name: next(
            d
            for d in viewer.window._wrapped_dock_widgets.values()
            if d.inner_widget() is w[name]
        )
        for name in w
    }
    session = w["Data"].session
    wait(lambda: session.catalog is not None)
    shot("start")  # as napari-peft-sam gui opens: Data and the prompt tester
    w["Data"].run_check()
    model = w["Model and method"]
    model.model.setCurrentText("demo")
    model.method.setCurrentText("lora")
    model.form.editors["rank"].setValue(4)
    wait(lambda: model.estimate is not None)

    steps = 20 if args.quick else 300
    train = w["Train"]
    train.form.editors["iterations"].setValue(steps)
    train.form.editors["val_interval"].setValue(max(steps // 6, 1))
    train.start()
    wait(lambda: train.last_result is not None)
    shot("run_finished", "Train")

    sweep = w["Sweep"]
    sweep.preset.setCurrentText("custom (from Data and Model)")
    sweep.fill_custom()
    sweep.set_grid(
        {"rank": [2, 8], "alpha": [1, 4], "iterations": [10 if args.quick else 80]}
    )
    sweep.start()
    job = session.jobs.jobs[-1]  # the Jobs list: the run done, the sweep running
    wait(lambda: job.line.startswith("trial") or not job.running)
    shot("job_list", "Sweep")
    wait(lambda: not job.running)
    results = w["Results"]
    results.refresh()
    wait(lambda: len(results.rows) >= 5, 60)
    results.metric.setCurrentText("single box")
    results.x_param.setCurrentText("alpha")
    results.y_param.setCurrentText("rank")

    prompt = w["Prompt tester"]
    prompt.load_run(train.last_result["run_dir"])
    prompt.image.setCurrentText("organoids images")
    prompt.truth.setCurrentText("organoids labels")
    prompt.compare.setChecked(True)
    prompt.base.setCurrentText("demo")
    prompt.start()
    labels = viewer.layers["organoids labels"].data[2]
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    ys, xs = np.nonzero(labels == ids[np.argmax(counts)])
    viewer.layers["prompts"].add([[np.median(ys), np.median(xs)]])
    wait(lambda: len(prompt.latencies) >= 2, 120)
    viewer.layers["organoids labels"].visible = False
    shot("comparison", "Prompt tester")  # tuned filled, base outlined, legend
    prompt.segment_everything()
    wait(lambda: any(lyr.name.startswith("automatic") for lyr in viewer.layers), 300)
    viewer.layers.selection.active = viewer.layers["prompts"]

    # one PNG per widget (the Jobs list is in job_list.png, the whole window)
    files = {name: name.lower().replace(" ", "_") for name in w if name != "Jobs"}
    return written + save_shots(
        viewer, w, args.out, files, ["Train", "Prompt tester"], "window"
    )


def save_shots(viewer, widgets, out: Path, files, front, window: str) -> list[Path]:
    """Each dock in ``files`` (dock name -> file stem) as ``out/STEM.png``,
    raised first so that it paints, then the whole window as
    ``out/WINDOW.png`` with the ``front`` docks raised; closes the session and
    the viewer, prints the paths and returns them."""
    from napari_peft_sam._qt.launch import wait_for

    out.mkdir(parents=True, exist_ok=True)
    # docks by their widget (napari names them 'Train (napari-peft-sam)')
    docks = {
        name: next(
            d
            for d in viewer.window._wrapped_dock_widgets.values()
            if d.inner_widget() is widgets[name]
        )
        for name in widgets
    }
    written = []
    for name, stem in files.items():
        docks[name].raise_()
        wait_for(lambda: False, 0.5)  # let the dock paint
        written.append(out / f"{stem}.png")
        widgets[name].grab().save(str(written[-1]))
    for name in front:
        docks[name].raise_()
    wait_for(lambda: False, 0.5)
    viewer.reset_view()  # the whole image in the canvas as it is now
    wait_for(lambda: False, 0.2)
    written.append(out / f"{window}.png")
    viewer.screenshot(str(written[-1]), canvas_only=False)
    widgets["Data"].session.close()
    viewer.close()
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
