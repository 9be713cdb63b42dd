"""Headless core of napari-peft-sam: models, PEFT methods, data, training.

Nothing in this package imports napari or Qt. Submodules are imported lazily
by their users so that ``import napari_peft_sam.core`` stays cheap.
"""
