"""Run ``seqstream worker`` as a child process (demo, chaos, tests, benchmarks).

The child gets its settings through ``SEQSTREAM_*`` environment variables, exactly as a
deployed worker would; :meth:`WorkerProcess.wait_ready` waits until the worker has joined its
consumer group and been assigned partitions (it logs a line we look for).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from schemas.exceptions import SeqstreamError
from stream_app.settings import Settings

READY_MARK = "seqstream worker ready"
# logged once per micro-batch that failed (model call or outputs) and was retried
FAILED_BATCH_MARK = "seqstream batch failed"


def settings_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """``SEQSTREAM_*`` variables that reproduce ``settings`` in another process."""
    env = dict(os.environ if base is None else base)
    for name, value in settings.model_dump().items():
        key = f"SEQSTREAM_{name.upper()}"
        if value is None:
            env.pop(key, None)
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, (tuple, list)):
            value = json.dumps(list(value))
        env[key] = str(value)
    return env


class WorkerProcess:
    #: the line :meth:`wait_ready` waits for (a learner's differs: stream_app.learner)
    ready_mark = READY_MARK

    def __init__(self, settings: Settings, log_path: str | Path, extra_args: list[str] = (),
                 name: str = "worker", command: list[str] | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.extra_env = dict(extra_env or {})
        # the child's argv; default ``python -m stream_app.cli worker EXTRA_ARGS``
        self.command = list(command) if command else None
        self.log_path = Path(log_path)
        self.extra_args = list(extra_args)
        self.name = name
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = settings_env(self.settings)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        self._ready_offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            self.command or [sys.executable, "-m", "stream_app.cli", "worker", *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
        return self

    def mark_log(self) -> None:
        """:meth:`wait_ready` from now on waits for a ready line written after this call."""
        if self.log_path.exists():
            self._ready_offset = self.log_path.stat().st_size

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SeqstreamError(f"{self.name} exited with {self.proc.returncode}:\n"
                                     + self.log_text()[-3000:])
            with open(self.log_path, "rb") as f:
                f.seek(self._ready_offset)
                if self.ready_mark.encode() in f.read():
                    return
            time.sleep(0.2)
        raise SeqstreamError(f"{self.name} not ready within {timeout_s:.0f} s:\n"
                             + self.log_text()[-3000:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def pause(self) -> None:
        """SIGSTOP: the process freezes (a stalled VM, a long GC pause, a debugger)."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM and wait (clean shutdown: open windows are flushed)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
                os.killpg(self.proc.pid, signal.SIGCONT)  # a paused worker handles it too
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()
        return self.proc.returncode if self.proc else None

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
