"""napari-facing pieces that need no Qt: sample data for File > Open Sample."""
