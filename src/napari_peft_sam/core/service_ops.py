"""The model service's registry: which function serves which request type.

``@serves(requests.X)`` registers a function in :data:`OPS` under ``X.op``;
the service (``core.service``) looks requests up there. The functions live in
``core.service_models`` (the pickers' catalog, descriptions, prompting) and
``core.service_runs`` (training, annotation sets, sweeps, results, export).
"""

from __future__ import annotations

from typing import Any

from . import requests

OPS: dict[str, Any] = {}


def serves(request_type: type[requests.Request]):
    """Register the decorated function as the server of ``request_type``."""

    def register(function):
        OPS[request_type.op] = function
        return function

    return register
