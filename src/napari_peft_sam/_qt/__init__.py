"""napari dock widgets; the only place that touches Qt and threads.

Widgets build requests and render events. Every model operation runs in the
model service, a child process (``core/service.py``), so that a crash in
training never takes napari down and torchvision is never imported after
napari's OpenGL canvas exists.
"""
