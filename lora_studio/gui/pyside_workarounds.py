"""Work around PySide6 6.12 returning None / True without a reference on Python < 3.12.

PySide6 6.12.0 (an abi3 wheel) returns `None` from void methods (QLabel.setText, QTimer.start, ...) and
`True` from `Signal.emit()` without taking a reference, which is harmless on Python 3.12+ where these
singletons are immortal (PEP 683), but on 3.11 every such call drops one reference. A GUI makes
thousands of such calls a minute, and the interpreter then aborts with "Fatal Python error:
none_dealloc: deallocating None" (or bool_dealloc), mid-run or at exit.

The fix is measured, not assumed: a probe calls a void method and emits a signal a few times and
watches the reference counts. Only when they leak are None, True and False given what 3.12 gives
them: a reference count no program can use up. A fixed PySide6, or Python 3.12+, runs untouched.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal

_PROBES = 16
_PLENTY = 1 << 40  # a leaked reference per microsecond would take twelve days to use this up
_SINGLETONS = (None, True, False)
_installed = False


class _Probe(QObject):
    ping = Signal()


def leaked_references() -> dict[str, int]:
    """How many references to None and True a few void calls and emits drop (0 and 0 when healthy)."""
    probe = _Probe()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(_PROBES):
        probe.setObjectName("probe")  # a void method: returns None
        probe.ping.emit()  # returns True
    leaks = {"None": none_before - sys.getrefcount(None), "True": true_before - sys.getrefcount(True)}
    for obj, n in ((None, leaks["None"]), (True, leaks["True"])):
        _add_references(obj, max(n, 0))  # give back what the probe itself took
    return leaks


def _add_references(obj: object, n: int) -> None:
    # ob_refcnt is the first field of every object; the GIL is held, so this is not racing anyone.
    ctypes.c_ssize_t.from_address(id(obj)).value += n


def install() -> bool:
    """Make None / True / False un-freeable if this PySide6 leaks references to them; True when it did."""
    global _installed
    if _installed:
        return True
    if sys.version_info >= (3, 12):
        return False  # immortal already
    leaks = leaked_references()
    if max(leaks.values()) < _PROBES:
        return False
    for obj in _SINGLETONS:
        _add_references(obj, _PLENTY)
    _installed = True
    return True
