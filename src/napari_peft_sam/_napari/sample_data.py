"""Sample data contributed to napari's File > Open Sample menu.

Each domain opens as a stack of its images (12 nuclei, 20 organoids) plus the
matching labels, as the plugin's widgets and ``napari-peft-sam train
--dataset`` see them.
"""

from __future__ import annotations

import numpy as np
import tifffile

from napari_peft_sam.core.sources import sample_data_root


def _domain(domain: str, colormap: str) -> list[tuple]:
    root = sample_data_root() / domain
    files = sorted((root / "images").glob("*.tif"))
    images = np.stack([tifffile.imread(f) for f in files])
    labels = np.stack([tifffile.imread(root / "labels" / f.name) for f in files])
    return [
        (images, {"name": f"{domain} images", "colormap": colormap}, "image"),
        (labels, {"name": f"{domain} labels", "opacity": 0.4}, "labels"),
    ]


def nuclei() -> list[tuple]:
    """16-bit fluorescence nuclei with instance labels (the demo model's domain)."""
    return _domain("nuclei", "gray")


def organoids() -> list[tuple]:
    """8-bit phase-contrast-like organoids with instance labels (the new domain)."""
    return _domain("organoids", "gray")
