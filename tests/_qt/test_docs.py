"""The user guide's screenshots regenerate (quick settings) and show content."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.qt
SCRIPT = Path(__file__).parents[2] / "docs" / "make_screenshots.py"
WIDGETS = ("data", "model_and_method", "train", "prompt_tester", "sweep", "results")
WINDOWS = ("start", "run_finished", "job_list", "comparison", "window")  # 1920x1080


def test_screenshot_script_writes_every_widget(tmp_path):
    from qtpy.QtGui import QImage

    env = dict(os.environ, NAPARI_PEFT_SAM_HOME=str(tmp_path / "home"))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path / "img")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in WINDOWS:
        image = QImage(str(tmp_path / "img" / f"{name}.png"))
        assert (image.width(), image.height()) == (1920, 1080), name
    for name in (*WIDGETS, *WINDOWS):
        image = QImage(str(tmp_path / "img" / f"{name}.png"))
        assert image.width() > 200 and image.height() > 150, name
        pixels = np.array(
            [
                image.pixel(x, y)
                for x in range(0, image.width(), 7)
                for y in range(0, image.height(), 7)
            ]
        )
        assert len(np.unique(pixels)) > 20, f"{name}.png looks empty"
