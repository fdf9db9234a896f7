"""Run slow work (decoding, scanning, copying, checking) on a pool thread and hand the result back on the
GUI thread.

One pool for the whole window. Image decodes (gui/images.py) share it with everything else, but every
other task goes first (`TASK_PRIORITY`): a flood of thumbnails never makes a scan or a health check wait.
Widgets are never touched from the worker: the result travels through a queued signal, and the callback is
skipped when the widget that asked has been deleted in the meantime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal

# Image decodes take priorities in [0, IMAGE_PRIORITY_SPAN); every other task runs above them.
IMAGE_PRIORITY_SPAN = 2**30
TASK_PRIORITY = IMAGE_PRIORITY_SPAN
# At least 4 threads, even on a 2-core machine: a long task (a health check decoding every image, a copy
# of a folder) holds its thread, and thumbnails must still come in beside it. Decoding mostly waits on
# the disk and in Pillow's C code, which releases the GIL.
MIN_THREADS = 4

_pool: QThreadPool | None = None


def pool() -> QThreadPool:
    """The window's one pool of worker threads."""
    global _pool
    if _pool is None:
        _pool = QThreadPool()
        _pool.setMaxThreadCount(max(MIN_THREADS, QThread.idealThreadCount()))
    return _pool


class _Relay(QObject):
    done = Signal(object, object)  # result, exception

    def __init__(self, owner: QObject | None):
        super().__init__()
        self.owner = owner
        self.cancelled = False  # set on the GUI thread, read by the worker before it starts


class _Job(QRunnable):
    def __init__(self, fn: Callable[[], Any], relay: _Relay):
        super().__init__()
        self.fn, self.relay = fn, relay

    def run(self) -> None:
        result, error = None, None
        if not self.relay.cancelled:  # its owner no longer wants it (cancel_pending): skip the work
            try:
                result = self.fn()
            except Exception as e:  # reported to the GUI thread, which decides what the artist sees
                error = e
        try:
            self.relay.done.emit(result, error)
        except RuntimeError:
            pass  # the app is shutting down and the relay is gone: nobody is waiting for this result


# Relays are created and released on the GUI thread; this set keeps each alive until its result lands
# (a cancelled job still reports, with nothing, so that its relay is released there too).
_live: set[_Relay] = set()


def run_in_background(
    fn: Callable[[], Any],
    on_done: Callable[[Any], None],
    on_error: Callable[[Exception], None] | None = None,
    *,
    owner: QObject | None = None,
    priority: int = TASK_PRIORITY,
) -> None:
    relay = _Relay(owner)
    _live.add(relay)

    def finish(result: Any, error: Exception | None) -> None:
        _live.discard(relay)
        if relay.cancelled or (owner is not None and not shiboken6.isValid(owner)):
            return
        if error is None:
            on_done(result)
        elif on_error is not None:
            on_error(error)
        else:
            raise error

    relay.done.connect(finish)
    pool().start(_Job(fn, relay), priority)


def cancel_pending(owner: QObject) -> None:
    """Drop `owner`'s jobs that have not started, and the results of those still running."""
    for relay in _live:
        if relay.owner is owner:
            relay.cancelled = True


def wait_for_background(timeout_ms: int = 10_000) -> bool:
    """Block until the pool is idle (app shutdown and tests); -1 waits as long as it takes."""
    return pool().waitForDone(timeout_ms)
