"""The model service: a child process that holds torch, micro-sam and the models.

The napari plugin never trains, evaluates or prompts in its own process. A
CUDA out-of-memory or a segfault in training would take napari down with it,
and importing torchvision after napari has created its OpenGL canvas segfaults
under Mesa software OpenGL. So the GUI starts this module as a fresh
interpreter (``python -m napari_peft_sam.core.service``), talks to it over a
local authenticated connection and renders the events that come back.

Protocol (pickled tuples):

- request ``(job, request)``: ``request`` is a typed request of
  ``core.requests``; ``core.service_ops.OPS`` maps its ``op`` to the function
  that serves it (in ``core.service_models`` or ``core.service_runs``);
  ``(job, None)`` asks job ``job`` to finish after its current step;
- replies ``(job, "event", payload)`` for every event a generator op yields,
  then ``(job, "done", value)`` or ``(job, "error", (message, is_user_error))``.

Requests run one after another on the main thread; a listener thread takes
stop requests at once. Nothing here imports napari or Qt.
"""

from __future__ import annotations

import argparse
import inspect
import os
import queue
import threading
import traceback

from . import requests, service_models, service_runs
from .errors import UserError
from .events import StopToken
from .service_ops import OPS

# importing them fills OPS: each function there is registered by @serves
HANDLERS = (service_models, service_runs)


def handle(conn, job: int, request: requests.Request, tokens: dict) -> None:
    """Run one request and send its events and its outcome."""
    function = OPS.get(getattr(request, "op", None))
    try:
        if function is None:
            raise UserError(f"The model service cannot serve {request!r}.")
        kwargs = request.kwargs()
        if "stop" in inspect.signature(function).parameters:
            kwargs["stop"] = tokens.setdefault(job, StopToken())
        result = function(**kwargs)
        if inspect.isgenerator(result):
            while True:
                try:
                    conn.send((job, "event", next(result)))
                except StopIteration as end:
                    result = end.value
                    break
        conn.send((job, "done", result))
    except UserError as error:
        conn.send((job, "error", (str(error), True)))
    except Exception as error:  # reported, the service lives on
        detail = traceback.format_exc(limit=-3)
        conn.send((job, "error", (f"{type(error).__name__}: {error}\n{detail}", False)))
    finally:
        tokens.pop(job, None)


def serve(conn) -> None:
    """Answer requests until the GUI closes the connection."""
    queued: queue.SimpleQueue = queue.SimpleQueue()
    tokens: dict[int, StopToken] = {}

    def listen():
        while True:
            try:
                job, request = conn.recv()
            except (EOFError, OSError):
                queued.put(None)
                return
            token = tokens.setdefault(job, StopToken())
            if request is None:
                token.stop()
            else:
                queued.put((job, request))

    threading.Thread(target=listen, daemon=True).start()
    while (message := queued.get()) is not None:
        job, request = message
        if tokens.get(job) is not None and tokens[job].is_set():
            conn.send((job, "done", {"stopped": True, "before_start": True}))
            continue
        handle(conn, job, request, tokens)


def accept(listener, gone, tries: int = 120, handshake_s: float = 2.0):
    """The service's connection on ``listener``, or None.

    Every wait is bounded: ``accept`` times out each second (``gone()`` says
    whether the child died), and the key handshake of each client must finish
    in ``handshake_s`` seconds, so a local client that connects and stays
    silent (or does not know the key) cannot block the GUI's service.
    """
    import socket
    import struct
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import (
        Connection,
        answer_challenge,
        deliver_challenge,
    )

    sock = getattr(listener._listener, "_socket", None)
    if sock is None:  # a Windows pipe: accept blocks until the child connects
        return listener.accept()
    sock.settimeout(1.0)
    key = listener._authkey

    def receive_timeout(conn, seconds: float) -> None:
        with socket.fromfd(conn.fileno(), sock.family, sock.type) as view:
            whole = int(seconds)
            view.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_RCVTIMEO,
                struct.pack("ll", whole, int((seconds - whole) * 1e6)),
            )

    for _ in range(tries):
        try:
            client, _address = sock.accept()
        except TimeoutError:
            if gone():
                return None
            continue
        except OSError:
            return None
        client.setblocking(True)
        conn = Connection(client.detach())
        try:
            receive_timeout(conn, handshake_s)
            deliver_challenge(conn, key)
            answer_challenge(conn, key)
            receive_timeout(conn, 0)
        except (AuthenticationError, EOFError, OSError):
            conn.close()  # a silent or foreign client: dropped, keep waiting
            continue
        return conn
    return None


def main(argv=None) -> None:
    from multiprocessing.connection import Client

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address",
        required=True,
        help="the GUI's listener: a socket path, pipe or host:port",
    )
    args = parser.parse_args(argv)
    address = args.address
    host, _, port = address.rpartition(":")
    if port.isdigit() and "/" not in address and "\\" not in address:
        address = (host, int(port))  # TCP; a Unix socket or a pipe otherwise
    authkey = bytes.fromhex(os.environ.pop("NAPARI_PEFT_SAM_SERVICE_KEY"))
    conn = Client(address, authkey=authkey)
    try:
        serve(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
