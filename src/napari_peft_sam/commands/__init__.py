"""The subcommands of ``napari-peft-sam`` (``napari_peft_sam.cli`` assembles them).

Each module imports nothing heavy at import time: ``--help`` builds every
parser without torch or micro-sam.
"""
