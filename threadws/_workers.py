"""Threads that serve one connection after another, and the one-shot latch they signal with.

Why
---
Every connection has a reader and a writer thread of its own (and under
:func:`threadws.serve`, a request thread). Creating and starting a thread is
most of what a short connection costs: ``Thread.start`` waits for the new
thread to run, and under load that wait is long (``bench/PROFILE.md``). So a
finished connection thread doesn't end at once: it waits, bounded in number
(:data:`MAX_IDLE` of them) and in time (:data:`IDLE_TIMEOUT` seconds each),
for the next connection's task.

An idle thread blocks on a lock of its own: it costs no CPU, and wakes only
for a task or at its idle timeout. It is named ``threadws-idle`` while it
waits and after the task it runs (``threadws-server-7-reader``) while it works.
:func:`threadws.reuse_threads` changes the bounds; ``reuse_threads(0)`` ends the
idle threads at once.

What it must never do
---------------------
Know what a task does: a task is a function that catches its own errors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["IDLE_TIMEOUT", "MAX_IDLE", "WORKERS", "Latch", "Task", "Workers", "reuse_threads"]

_logger = logging.getLogger("threadws")

#: How many finished threads may wait for a new task, and how long each waits.
MAX_IDLE = 256
IDLE_TIMEOUT = 30.0
IDLE_NAME = "threadws-idle"


class Latch:
    """Set once, waited on by any number of threads: an Event for one use, made of one lock.

    (``threading.Event`` is a Condition, a lock and a deque: several times
    the memory, for every connection, most of which are never waited on.)
    """

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held until set()
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Open the latch for good (call it once)."""
        self._set = True
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set; False if *timeout* passed first."""
        if self._set:
            return True
        if not self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        self._lock.release()  # let the next waiter through too
        return True


class Task:
    """One function running on a (possibly reused) thread."""

    __slots__ = ("_done", "name", "target", "thread")

    def __init__(self, target: Callable[[], object], name: str) -> None:
        self.target = target
        self.name = name
        self.thread: threading.Thread | None = None  # the thread running it, once it runs
        self._done = Latch()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the function has returned; False if *timeout* passed first."""
        return self._done.wait(timeout)

    def is_alive(self) -> bool:
        return not self._done.is_set()

    def is_current(self) -> bool:
        """True when called from the task's own function."""
        return self.thread is threading.current_thread() and not self._done.is_set()


class _Worker:
    __slots__ = ("task", "wake")

    def __init__(self, task: Task) -> None:
        self.task = task
        self.wake = threading.Lock()  # released to hand a new task over
        self.wake.acquire()


class Workers:
    """A process's reusable threads; see the module documentation."""

    def __init__(self, max_idle: int = MAX_IDLE, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def run(self, task: Task) -> None:
        """Run *task* on an idle thread, or a new one; returns at once.

        Raises:
            RuntimeError: no idle thread, and a new one can't be started.
        """
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is not None:
            worker.task = task
            worker.wake.release()
            return
        worker = _Worker(task)
        threading.Thread(target=self._serve, args=(worker,), name=task.name, daemon=True).start()

    def configure(self, max_idle: int, idle_timeout: float) -> None:
        """New bounds; idle threads beyond *max_idle* end now."""
        if max_idle < 0 or idle_timeout < 0:
            raise ValueError("max_idle and idle_timeout must be >= 0")
        with self._lock:
            self.max_idle = max_idle
            self.idle_timeout = idle_timeout
            extra = self._idle[max_idle:]
            del self._idle[max_idle:]
        for worker in extra:
            worker.task = _END
            worker.wake.release()

    def idle(self) -> int:
        """How many threads wait for a task now."""
        return len(self._idle)

    def _serve(self, worker: _Worker) -> None:
        thread = threading.current_thread()
        while True:
            task = worker.task
            if task is _END:
                return
            thread.name = task.name
            task.thread = thread
            try:
                task.target()
            except BaseException:  # a task catches its own errors: this is a bug
                _logger.exception("%s: task failed", task.name)
            finally:
                task._done.set()
            thread.name = IDLE_NAME
            with self._lock:
                if len(self._idle) >= self.max_idle:
                    return
                self._idle.append(worker)
                timeout = self.idle_timeout
            if worker.wake.acquire(timeout=timeout):
                continue  # a task (or the end) was handed over
            with self._lock:
                if worker in self._idle:
                    self._idle.remove(worker)
                    return  # no task came in time
            worker.wake.acquire()  # start() took it just now: its task is being handed over


_END = Task(lambda: None, "end")

#: The process's reusable threads.
WORKERS = Workers()


def reuse_threads(max_idle: int = MAX_IDLE, idle_timeout: float = IDLE_TIMEOUT) -> None:
    """Set how connection threads are reused (threadws does it by default).

    A connection's reader and writer threads (and :func:`threadws.serve`'s
    request threads) don't end with their connection: up to *max_idle* of
    them wait, each at most *idle_timeout* seconds, to serve the next one,
    which saves starting new threads (most of what a short connection
    costs). A waiting thread uses no CPU; it is named ``threadws-idle``.
    ``reuse_threads(0)`` turns reuse off and ends the waiting threads now.

    Raises:
        ValueError: a negative bound.
    """
    WORKERS.configure(max_idle, idle_timeout)
