"""Run slow work (decoding, scanning, copying) on a pool thread and hand the result back on the GUI thread.

Widgets are never touched from the worker: the result travels through a queued signal, and the
callback is skipped when the widget that asked has been deleted in the meantime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal



class _Relay(QObject):
    done = Signal(object, object)  # result, exception


class _Job(QRunnable):
    def __init__(self, fn: Callable[[], Any], relay: _Relay):
        super().__init__()
        self.fn, self.relay = fn, relay

    def run(self) -> None:
        try:
            result, error = self.fn(), None
        except Exception as e:  # reported to the GUI thread, which decides what the artist sees
            result, error = None, e
        try:
            self.relay.done.emit(result, error)
        except RuntimeError:
            pass  # the app is shutting down and the relay is gone: nobody is waiting for this result


# Relays are created and released on the GUI thread; this set keeps each alive until its result lands.
_live: set[_Relay] = set()


def run_in_background(
    fn: Callable[[], Any],
    on_done: Callable[[Any], None],
    on_error: Callable[[Exception], None] | None = None,
    *,
    owner: QObject | None = None,
    pool: QThreadPool | None = None,
    priority: int = 0,
) -> None:
    relay = _Relay()
    _live.add(relay)

    def finish(result: Any, error: Exception | None) -> None:
        _live.discard(relay)
        if owner is not None and not shiboken6.isValid(owner):
            return
        if error is None:
            on_done(result)
        elif on_error is not None:
            on_error(error)
        else:
            raise error

    relay.done.connect(finish)
    (pool or QThreadPool.globalInstance()).start(_Job(fn, relay), priority)


def wait_for_background(timeout_ms: int = 10_000) -> bool:
    """Block until the shared pool is idle (app shutdown and tests)."""
    return QThreadPool.globalInstance().waitForDone(timeout_ms)
