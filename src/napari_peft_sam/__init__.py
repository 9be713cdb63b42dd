"""Parameter-efficient fine-tuning of Segment Anything models in napari."""

__version__ = "0.1.0"
