"""Shared fixtures. torch and torchvision are imported before any Qt/OpenGL
state exists: importing torchvision after napari made its OpenGL canvas
segfaults under Mesa software rendering."""

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
