"""The plain-napari path: widgets opened from the menu after the canvas exists.

Importing torchvision after napari's OpenGL canvas segfaults under Mesa
software OpenGL. The plugin keeps every model in the service process, so the
GUI process never imports torchvision; this runs that path in a fresh
interpreter (the test suite itself imports torchvision early).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.qt


def test_plain_napari_start_prompts_without_crashing(tmp_path):
    script = Path(__file__).with_name("plain_napari_session.py")
    env = dict(os.environ, NAPARI_PEFT_SAM_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["ready"] and out["masked"] and out["mask_pixels"] > 20
    assert not out["torchvision_in_gui"]
    # the Train widget docked the Data widget, which chose the layers
    assert out["data_choice"] == "napari layers"
    assert out["train_data"] == "napari layers nuclei images + nuclei labels"
