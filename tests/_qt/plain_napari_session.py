"""A user's plain ``napari`` start: canvas first, then the plugin from the menu.

Run as a script (by test_plain_napari.py) so that nothing has imported torch
or torchvision before napari creates its OpenGL canvas. Prints one JSON line.
"""

import json
import sys

import napari
import numpy as np

from napari_peft_sam._qt.launch import wait_for

viewer = napari.Viewer()
viewer.open_sample("napari-peft-sam", "nuclei")
viewer.dims.set_current_step(0, 0)


# what Plugins > PEFT-SAM > Prompt tester / Train do
_, prompt = viewer.window.add_plugin_dock_widget("napari-peft-sam", "Prompt tester")
_, train = viewer.window.add_plugin_dock_widget("napari-peft-sam", "Train")
ready = wait_for(lambda: prompt.session.catalog is not None, 120)
prompt.image.setCurrentText("nuclei images")
prompt.model.setCurrentText("demo")
prompt.start()
labels = viewer.layers["nuclei labels"].data[0]
ys, xs = np.nonzero(labels == np.bincount(labels.ravel())[1:].argmax() + 1)
viewer.layers["prompts"].add([[ys.mean(), xs.mean()]])
masked = wait_for(lambda: viewer.layers["mask (model)"].data.sum() > 20, 60)
viewer.screenshot(canvas_only=False)  # the canvas drew after the model ran
request = train.run_request()  # docks the Data widget it needs
out = {
    "train_data": request.source.get("source"),
    "ready": bool(ready),
    "mask_pixels": int(viewer.layers["mask (model)"].data.sum()),
    "masked": bool(masked),
    "torchvision_in_gui": "torchvision" in sys.modules,
    "data_choice": prompt.session.choices.data.kind,
}
prompt.session.close()
print(json.dumps(out), flush=True)
viewer.close()
