"""'Next image' of the Annotate widget: the next file of a folder, or the next
plane of a stack, that is not in the annotation set yet (by pixel hash)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image

from ..core.annotations import array_hash

OPENED = "image to annotate"  # the layer a folder's files are opened into


class ImageSteps:
    """Where 'Next image' goes: a folder's files in name order, else the planes
    of the image layer being prompted."""

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self.files: list[Path] = []
        self.position = -1

    def set_folder(self, folder: str) -> int:
        """Step through ``folder``'s images from the first; returns how many."""
        from ..core.sources import expand_paths

        self.files, self.position = expand_paths(folder), -1
        return len(self.files)

    def next(self, layer, known: set[str]) -> tuple[str | None, str]:
        """Open the next image not in ``known`` (hashes); returns the layer to
        prompt on (None if there is none) and a sentence for the user."""
        if self.files:
            return self._next_file(known)
        if not isinstance(layer, Image) or layer.ndim < 3:
            return None, "Choose an image folder, or open a stack to step through."
        for plane in range(self.viewer.dims.current_step[0] + 1, layer.data.shape[0]):
            if array_hash(np.asarray(layer.data[plane])) not in known:
                self.viewer.dims.set_current_step(0, plane)
                return layer.name, f"Opened plane {plane} of {layer.name}"
        return None, "No plane left in the stack that is not in the set."

    def _next_file(self, known: set[str]) -> tuple[str | None, str]:
        from ..core.sources import read_image

        while self.position + 1 < len(self.files):
            self.position += 1
            path = self.files[self.position]
            data = read_image(path)
            if array_hash(data) in known:
                continue  # annotated before
            if OPENED in self.viewer.layers:
                layer = self.viewer.layers[OPENED]
                layer.data = data
                layer.reset_contrast_limits()
            else:
                layer = self.viewer.add_image(data, name=OPENED)
            layer.metadata["path"] = str(path)
            return OPENED, f"Opened {path.name}"
        return None, "No image left in the folder that is not in the set."
