"""Screenshots of the annotate-retrain loop from a real session on the organoid images.

    xvfb-run -a python docs/make_annotate_screenshots.py [--out docs/images] [--quick]

napari opens as ``napari-peft-sam gui`` does, with the demo model. The
Annotate widget steps through a folder of organoid images; on each, every
object is prompted in the prompt tester as a person would (a box, then a
corrective point pair where the mask is wrong, micro-sam's rule, up to 7
clicks) and committed; an object the model cannot get (IoU under 0.8) is
painted into the committed layer from the reference labels, as a person
would paint it. After each round of images the model is retrained with the
Retrain button. Saves the Annotate widget, the prompt tester, the Results
panel's effort curve and the whole window as ``annotate_*.png``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from make_screenshots import save_shots  # docs/ is the script's folder

THRESHOLD, BUDGET = 0.8, 7


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images")
    parser.add_argument("--quick", action="store_true", help="few steps (tests)")
    args = parser.parse_args(argv)
    os.environ.setdefault("NAPARI_PEFT_SAM_HOME", tempfile.mkdtemp(prefix="peft-ann-"))

    from napari_peft_sam._qt.launch import launch, wait_for

    viewer, w = launch(sample=None, run=False)
    viewer.window._qt_window.resize(1700, 1100)
    session = w["Data"].session

    def wait(condition, timeout_s=10800.0):
        if not wait_for(condition, timeout_s, poll_s=0.02):
            raise TimeoutError("the session did not reach the expected state")

    wait(lambda: session.catalog is not None)
    w["Model and method"].model.setCurrentText("demo")
    w["Train"].form.editors["iterations"].setValue(20 if args.quick else 150)
    folder, truths = write_folder(Path(session.home) / "to-annotate")
    annotate, prompt = w["Annotate"], w["Prompt tester"]
    annotate.set_name.setCurrentText("organoids")
    annotate.held_out_every.setValue(3)
    annotate.choose_folder(str(folder))
    prompt.model.setCurrentText("demo")
    rounds = [3, 3, 2] if not args.quick else [2, 1]
    for r, n in enumerate(rounds):
        for _ in range(n):
            annotate.next_image()
            annotate_image(viewer, prompt, truths, wait)
            before = annotate.aset().version if annotate.aset() else 0
            annotate.add()
            wait(lambda b=before: annotate.aset() and annotate.aset().version > b)
        if r < len(rounds) - 1:
            annotate.retrain()
            wait(lambda: not annotate.running)
    files = {
        "Annotate": "annotate_widget",
        "Prompt tester": "annotate_prompt",
        "Results": "annotate_results",
    }
    return save_shots(viewer, w, args.out, files, ["Annotate"], "annotate_window")


def write_folder(folder: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """The organoid sample images as a folder of files to annotate, and their
    reference labels by file name (for the simulated person's clicks)."""
    import tifffile

    from napari_peft_sam.core.sources import read_image, sample_data_root

    root = sample_data_root() / "organoids"
    folder.mkdir(parents=True, exist_ok=True)
    truths = {}
    for path in sorted((root / "images").glob("*.tif")):
        tifffile.imwrite(folder / path.name, read_image(path))
        truths[path.name] = read_image(root / "labels" / path.name)
    return folder, truths


def annotate_image(viewer, prompt, truths, wait) -> None:
    """Every object of the opened image: prompt, correct, commit (or paint)."""
    import torch

    from napari_peft_sam.core.prompts import corrective_points

    truth = truths[Path(viewer.layers["image to annotate"].metadata["path"]).name]
    gen = torch.Generator().manual_seed(0)
    for object_id in np.unique(truth)[1:]:
        target = truth == object_id
        ys, xs = np.nonzero(target)
        corners = [[ys.min(), xs.min()], [ys.max(), xs.max()]]
        viewer.layers["box prompts"].add_rectangles([corners])
        clicks, mask = 1, settled(prompt, wait)
        while iou(mask, target) < THRESHOLD and clicks + 2 <= BUDGET:
            points, labels = corrective_points(
                torch.from_numpy(target)[None], torch.from_numpy(mask)[None], gen
            )
            for (x, y), positive in zip(
                points[0].tolist(), labels[0].tolist(), strict=True
            ):
                (prompt.positive if positive else prompt.negative).setChecked(True)
                viewer.layers["prompts"].add([[y, x]])
            clicks, mask = clicks + 2, settled(prompt, wait)
        prompt.positive.setChecked(True)
        prompt.commit()
        if iou(mask, target) < THRESHOLD:  # the rest painted by hand
            committed = viewer.layers["committed objects"]
            data = np.asarray(committed.data).copy()
            last = data.max()
            data[data == last] = 0
            data[target] = last
            committed.data = data


def settled(prompt, wait) -> np.ndarray:
    """The model's mask once every reply is in."""
    wait(lambda: not any(prompt._busy.values()), 120)
    return np.asarray(prompt.viewer.layers["mask (model)"].data) > 0


def iou(mask: np.ndarray, target: np.ndarray) -> float:
    return float((mask & target).sum() / max((mask | target).sum(), 1))


if __name__ == "__main__":
    main()
