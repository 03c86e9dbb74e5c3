"""The worker's one model thread, serving requests before the stream's waiting work.

Every model call of a worker runs on one thread (two cores: a second model thread fights the
stream's for them, and both lose; BENCHMARKS.md "Serving on request"). The stream hands its
batch's model call over as sub-batches (:meth:`BatchProcessor.predict_parts`), all queued at
once; a request batch (:mod:`stream_app.serve.service`) is queued as *urgent* and runs as
soon as the sub-batch on the thread ends, before the stream's next one. A request therefore
waits for at most one sub-batch, not a whole event batch, and the stream loses no time to
round trips between its sub-batches.

Within one priority the order is first in, first out.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from concurrent.futures import Executor, Future

URGENT = 0  # request batches
STREAM = 1  # the stream's model calls, new items, explanations


class ModelThread(Executor):
    """An executor of one thread that runs urgent work before waiting stream work.

    :meth:`submit` (what ``loop.run_in_executor`` calls) queues stream work;
    :meth:`submit_urgent` queues work that runs next."""

    def __init__(self, name: str = "seqstream-model") -> None:
        self._queue: list = []
        self._order = itertools.count()
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
            heapq.heappush(self._queue, (priority, next(self._order), future, fn, args, kwargs))
            self._wake.notify()
        return future

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if not self._queue:  # closed and drained
                    return
                priority, _, future, fn, args, kwargs = heapq.heappop(self._queue)
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
                for item in self._queue:
                    item[2].cancel()
                self._queue.clear()
            self._wake.notify_all()
        if wait and self._runner is not threading.current_thread():
            self._runner.join()


__all__ = ["STREAM", "URGENT", "ModelThread"]
