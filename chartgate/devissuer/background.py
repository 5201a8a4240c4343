"""Run an ASGI app (the dev issuer) with uvicorn on a loopback socket in a background thread, for tests and demos."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any


class BackgroundServer:
    """A real HTTP server in this process.

    The socket is bound when the object is made (port 0: the kernel picks), so `url` is known
    before the app is built (an issuer's `iss` is its own URL) and there is no window in which
    another process could take a port probed as free.

        server = BackgroundServer()
        with server.serving(create_app(DevIssuer(directory, server.url))):
            ...
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, app: Any) -> BackgroundServer:
        import uvicorn  # here: importing this module must stay cheap

        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10.0
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.005)
        return self

    def serving(self, app: Any) -> BackgroundServer:
        """Start serving `app`; use as a context manager to stop on exit."""
        return self.start(app)

    def stop(self) -> None:
        """Stop serving and close the socket: afterwards connections to the port are refused."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10.0)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
