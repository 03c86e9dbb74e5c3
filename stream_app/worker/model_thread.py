"""The worker's one model thread, serving requests before the stream's waiting work.

Every model call of a worker runs on one thread (two cores: a second model thread fights the
stream's for them, and both lose; BENCHMARKS.md "Serving on request"). The stream hands its
batch's model call over as sub-batches (:meth:`BatchProcessor.predict_parts`), all queued at
once; a request batch (:mod:`stream_app.serve.service`) is queued as *urgent* and runs as
soon as the sub-batch on the thread ends, before the stream's next one. A request therefore
waits for at most one sub-batch, not a whole event batch, and the stream loses no time to
round trips between its sub-batches.

Requests first could starve the stream: under a steady flow of requests one request batch
follows another while the stream's sub-batches wait. ``urgent_turns`` bounds that: after so
many urgent jobs in a row, the oldest waiting stream job runs next (with 1 the two take
turns while both wait), so the stream keeps at least its share of the thread.

Within one priority the order is first in, first out.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Executor, Future

URGENT = 0  # request batches
STREAM = 1  # the stream's model calls, new items, explanations


class ModelThread(Executor):
    """An executor of one thread that runs urgent work before waiting stream work.

    :meth:`submit` (what ``loop.run_in_executor`` calls) queues stream work;
    :meth:`submit_urgent` queues work that runs next, unless ``urgent_turns`` urgent jobs
    (0: no bound) ran in a row and stream work waits."""

    def __init__(self, name: str = "seqstream-model", urgent_turns: int = 0) -> None:
        self.urgent_turns = urgent_turns
        self._queues: tuple[deque, deque] = (deque(), deque())  # URGENT, STREAM
        self._in_a_row = 0  # urgent jobs run since the last stream job
        self._wake = threading.Condition()
        self._closed = False
        self.urgent_runs = 0
        self.stream_runs = 0
        self._runner = threading.Thread(target=self._work, name=name, daemon=True)
        self._runner.start()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self._put(STREAM, fn, args, kwargs)

    def submit_urgent(self, fn, /, *args, **kwargs) -> Future:
        return self._put(URGENT, fn, args, kwargs)

    def _put(self, priority: int, fn, args, kwargs) -> Future:
        future: Future = Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("the model thread is shut down")
            self._queues[priority].append((future, fn, args, kwargs))
            self._wake.notify()
        return future

    def _take(self) -> tuple[int, tuple]:
        """The next job and its priority (the lock held, a job waiting)."""
        urgent, stream = self._queues
        turns = self.urgent_turns
        if urgent and not (stream and turns and self._in_a_row >= turns):
            self._in_a_row += 1
            return URGENT, urgent.popleft()
        self._in_a_row = 0
        return STREAM, stream.popleft()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not any(self._queues) and not self._closed:
                    self._wake.wait()
                if not any(self._queues):  # closed and drained
                    return
                priority, (future, fn, args, kwargs) = self._take()
            if not future.set_running_or_notify_cancel():
                continue
            if priority == URGENT:
                self.urgent_runs += 1
            else:
                self.stream_runs += 1
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits for it
                future.set_exception(e)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._wake:
            self._closed = True
            if cancel_futures:
                for queue in self._queues:
                    for item in queue:
                        item[0].cancel()
                    queue.clear()
            self._wake.notify_all()
        if wait and self._runner is not threading.current_thread():
            self._runner.join()


__all__ = ["STREAM", "URGENT", "ModelThread"]
