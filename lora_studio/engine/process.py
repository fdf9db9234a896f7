"""The engine as a process, talking JSON lines on stdout (train, export and compare all run in it).

The real stdout is kept privately for the event stream and `sys.stdout` is routed to stderr, so a
stray print from any library can never corrupt the stream; stderr is the human log. Commands arrive as
lines on stdin (`stop`, `sample`, `save`); SIGINT / SIGTERM mean `stop`.
"""

from __future__ import annotations

import errno
import io
import os
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from lora_studio.core import events as ev
from lora_studio.core.errors import UserError
from lora_studio.core.runs import events_file


class StreamSink:
    """Events to the private stdout handle and appended to the run folder's event log."""

    def __init__(self, stream: io.TextIOBase):
        self.stream = stream
        self.log_file = None
        self.pending: list[ev.Event] = []

    def attach_run_dir(self, run_dir: Path) -> None:
        self.log_file = open(events_file(run_dir), "a", encoding="utf-8")
        for e in self.pending:
            self._log(e)
        self.pending.clear()

    def _log(self, event: ev.Event) -> None:
        try:
            self.log_file.write(event.to_json() + "\n")
            self.log_file.flush()
        except OSError as e:
            # A full disk must not turn into a crash while reporting the full disk: the app still gets
            # every event on stdout; the log on disk stops here, and stderr says so once.
            print(f"{self.log_file.name} can no longer be written ({e.strerror}); events continue on stdout only.", file=sys.stderr)
            self.log_file = None
            self.pending = []

    def emit(self, event: ev.Event) -> None:
        line = event.to_json()
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # the app went away; keep training and logging to the file
        if isinstance(event, ev.Started) and self.log_file is None:
            self.attach_run_dir(Path(event.run_dir))
        if self.log_file is not None:
            self._log(event)
        elif self.pending is not None:
            self.pending.append(event)
        if isinstance(event, (ev.Warning, ev.Error)):
            print(f"{event.type}: {event.message}", file=sys.stderr)
            if isinstance(event, ev.Error) and event.hint:
                print(f"  {event.hint}", file=sys.stderr)  # a headless user reads stderr, not the JSON


class StdinCommands:
    """Lines from stdin, read on a daemon thread; signals become `stop`."""

    def __init__(self, read_stdin: bool = True):
        self.queue: queue.Queue[str] = queue.Queue()
        if read_stdin and sys.stdin is not None and not sys.stdin.closed:
            threading.Thread(target=self._read, daemon=True).start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, lambda *_: self.queue.put("stop"))
            except ValueError:  # not the main thread (in-process tests)
                pass

    def _read(self) -> None:
        try:
            for line in sys.stdin:
                self.queue.put(line.strip().lower())
        except (OSError, ValueError):
            return

    def poll(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                return out


def event_process(body: Callable[[StreamSink], int], *, what: str, oom: Callable[[bool], ev.Error],
                  on_failure: Callable[[StreamSink], None] = lambda sink: None) -> int:
    """Run `body` as an engine process: events on the private stdout, stray prints to stderr, and every
    failure turned into one `error` event (then `finished` failed, exit 1) — never a bare traceback."""
    events_out = sys.stdout
    if os.environ.get("RANK", "0") != "0":
        # Under `accelerate launch` only rank 0 speaks: one event stream, whatever the process count.
        events_out = open(os.devnull, "w")
    sys.stdout = sys.stderr  # stray prints go to the human log, never into the event stream
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # "Loading pipeline components…" bars, as raw lines in the Log
    sink = StreamSink(events_out)
    try:
        return body(sink)
    except UserError as e:
        on_failure(sink)
        sink.emit(ev.Error(e.code, e.message, e.hint))
    except OSError as e:  # a full disk, a folder that cannot be written: the computer's state, not a bug
        on_failure(sink)
        sink.emit(_file_error(e))
    except Exception as e:  # noqa: BLE001 - the last line of defence
        from lora_studio.engine.out_of_memory import out_of_memory_where

        on_failure(sink)
        where = out_of_memory_where(e)
        if where is not None:
            sink.emit(oom(where == "gpu"))
        else:
            traceback.print_exc(file=sys.stderr)
            sink.emit(ev.Error("internal_error", f"{what} failed unexpectedly: {type(e).__name__}: {e}.",
                               "This is a bug in LoRA Studio; the log above has the details (please report it)."))
    finally:
        sys.stdout = events_out
    sink.emit(ev.Finished("failed", 0))
    return 1


NO_ROOM = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
NOT_ALLOWED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _file_error(e: OSError) -> ev.Error:
    """An OSError as the artist needs it: which file, what went wrong, what to do. Checkpoints and exports
    are written to a temp file or folder and renamed into place, so what was saved before is intact."""
    name = f" {e.filename}" if e.filename else ""
    if e.errno in NO_ROOM:
        return ev.Error("disk_full", f"There was no room to write{name} ({e.strerror}).",
                        "Free some space on that disk (or set output.dir to a folder on another one), then resume; "
                        "what was saved before, the last checkpoint included, is intact.")
    if e.errno in NOT_ALLOWED:
        return ev.Error("cannot_write", f"LoRA Studio may not write{name} ({e.strerror}).",
                        "Choose a folder you can write to (output.dir, or the project's folder), or change its permissions.")
    return ev.Error("file_error", f"A file operation failed{' on' + name if name else ''}: {e.strerror or e}.",
                    "Check that the disk is connected and the path exists, then resume; what was saved before is intact.")

