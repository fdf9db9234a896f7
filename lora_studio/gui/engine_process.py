"""The engine as a child process: `python -m lora_studio train | export | compare ...` behind one QObject.

Shaped like Frescobaldi's Job: every QProcess signal is connected in one place, stdout is read line by
line into protocol events (one `event` signal; readers match on the type), stderr is the human log, and
one `done(success)` says the process is gone. The GUI never imports the engine; it only ever talks to it
through this process.

Two engine processes never work on one project at once (a comparison loading the model while a run
trains would fight it for the GPU, and an export could read a checkpoint being replaced): starting one
while another runs for the same project is refused with EngineBusy, which says what is running.
"""

from __future__ import annotations

import sys
from collections import deque
from pathlib import Path

import psutil
from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from lora_studio.core import events as ev
from lora_studio.core.errors import UserError


STDERR_TAIL_LINES = 12  # how much of the log a crash banner quotes
# What each subcommand is, in the words of the message that refuses a second one.
TASK_WORDS = {"train": "Training", "export": "An export", "compare": "A comparison"}


class EngineBusy(UserError):
    code = "engine_busy"


class _Running:
    """Which project has an engine process at work, and which one: the one owner of that question."""

    def __init__(self) -> None:
        self._by_project: dict[Path, EngineProcess] = {}

    def claim(self, project: Path, process: EngineProcess, task: str) -> None:
        other = self._by_project.get(project)
        if other is not None and other is not process and other.is_running():
            raise EngineBusy(f"{TASK_WORDS.get(other.task, 'The engine')} is still running for this project, so "
                             f"{TASK_WORDS.get(task, 'this').lower()} cannot start now.",
                             hint="Wait for it to finish, or stop it, then try again.")
        self._by_project[project] = process

    def release(self, process: EngineProcess) -> None:
        for project in [p for p, owner in self._by_project.items() if owner is process]:
            del self._by_project[project]


RUNNING = _Running()


def project_of(args: list[str]) -> Path | None:
    """The project an engine command works on: the folder holding the run's runs/ folder (`train` names a
    file in the run's folder, `export` and `compare` the folder itself); None for commands that touch no run."""
    if len(args) < 2 or args[0] not in TASK_WORDS:
        return None
    run_dir = Path(args[1]).parent if args[0] == "train" else Path(args[1])
    return run_dir.resolve().parent.parent


class _LineBuffer:
    """Splits a byte stream into complete text lines; a partial line waits for the rest."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[str]:
        chunks = (self._pending + data).split(b"\n")
        self._pending = chunks.pop()
        return [_decode(c) for c in chunks]

    def flush(self) -> list[str]:
        rest, self._pending = self._pending, b""
        return [_decode(rest)] if rest.strip() else []


def _decode(raw: bytes) -> str:
    # The engine writes UTF-8 (PYTHONIOENCODING below); a torn multi-byte character must not raise.
    return raw.decode("utf-8", errors="replace").rstrip("\r")


def kill_process_tree(pid: int, terminate_first: bool = False) -> list[psutil.Process]:
    """Kill pid and all its descendants (data loader workers, accelerate ranks) and return them.

    With terminate_first, send SIGTERM (TerminateProcess on Windows) instead and leave the killing to
    a later call with the same list, once the processes have had a moment to save and exit.
    """
    try:
        parent = psutil.Process(pid)
        procs = [*parent.children(recursive=True), parent]
    except psutil.Error:
        return []
    for proc in procs:
        try:
            proc.terminate() if terminate_first else proc.kill()
        except psutil.Error:
            pass
    return procs


class EngineProcess(QObject):
    event = Signal(object)  # every protocol event the engine sends (core/events.py), in order
    log_line = Signal(str)  # one stderr line (and any stray non-JSON stdout line)
    done = Signal(bool)  # the process is gone; True when it exited 0 having said what it promised

    def __init__(
        self,
        parent: QObject | None = None,
        program: str | None = None,
        prefix_args: list[str] | None = None,
        require_finished: bool = True,
        kill_grace_ms: int = 5000,
    ):
        """program/prefix_args default to `sys.executable -m lora_studio`; tests point them at a fake engine.

        require_finished: a train run succeeds only with a `finished` event; an export only emits
        `exported`, so its runner passes False and a clean exit is enough.
        """
        super().__init__(parent)
        self.program = program or sys.executable
        self.prefix_args = list(prefix_args) if prefix_args is not None else ["-m", "lora_studio"]
        self.require_finished = require_finished
        self.kill_grace_ms = kill_grace_ms
        self.task = ""  # the subcommand running: train | export | compare
        self.last_finished: ev.Finished | None = None
        self.last_error: ev.Error | None = None
        self._stdout = _LineBuffer()
        self._stderr = _LineBuffer()
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._running = False
        self._force_reason = ""  # set when we ended the process ourselves
        self._doomed: list[psutil.Process] = []
        # One QProcess, reused for every start: deleting a QProcess whose signals are still queued is a
        # known use-after-free in PySide6, and a finished QProcess can simply be started again.
        self._process = QProcess(self)
        self._stop_timer = QTimer(self, singleShot=True, timeout=self._on_stop_timeout)
        self._kill_timer = QTimer(self, singleShot=True, timeout=self._on_kill_timeout)
        self._connect()

    def _connect(self) -> None:
        p = self._process
        p.started.connect(self._on_started)
        p.finished.connect(self._on_finished)
        p.errorOccurred.connect(self._on_error)
        p.readyReadStandardOutput.connect(self._on_stdout)
        p.readyReadStandardError.connect(self._on_stderr)

    # --- public API ---------------------------------------------------------------------------------

    def start(self, args: list[str]) -> None:
        """Run the engine with args after `-m lora_studio`, e.g. ["train", str(run.config), "--resume"].
        Raises EngineBusy while another engine process works on the same project."""
        if self._running:
            raise RuntimeError("the engine is already running")
        args = [str(a) for a in args]
        project = project_of(args)
        if project is not None:
            RUNNING.claim(project, self, args[0])
        self.task = args[0] if args else ""
        self.last_finished = self.last_error = None
        self._stdout, self._stderr = _LineBuffer(), _LineBuffer()
        self._stderr_tail.clear()
        self._force_reason = ""
        self._doomed = []
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")  # events must arrive as they happen, not when a buffer fills
        env.insert("PYTHONIOENCODING", "utf-8")  # Windows consoles default to a code page otherwise
        self._process.setProcessEnvironment(env)
        self._running = True
        self._process.start(self.program, [*self.prefix_args, *args])

    def send(self, command: str) -> bool:
        """Write one command line (stop / sample / save) to the engine's stdin; False if not running."""
        if self._process.state() != QProcess.ProcessState.Running:
            return False
        return self._process.write((command.strip() + "\n").encode("utf-8")) > 0

    def stop(self, timeout_ms: int = 60000) -> None:
        """Ask the engine to stop cleanly (finish the step, save, export); end it if it has not after timeout_ms."""
        if not self._running or self._stop_timer.isActive() or self._kill_timer.isActive():
            return
        self.send("stop")
        self._stop_timer.start(max(0, timeout_ms))

    def kill(self) -> None:
        """End the engine and its children now (closing the app, a second press of Stop)."""
        if not self._running:
            return
        self._stop_timer.stop()
        self._force_reason = self._force_reason or "killed"
        self._kill_now()

    def is_running(self) -> bool:
        return self._running

    def is_stopping(self) -> bool:
        return self._stop_timer.isActive() or self._kill_timer.isActive()

    def stderr_tail(self) -> list[str]:
        return list(self._stderr_tail)

    # --- process signals ----------------------------------------------------------------------------

    def _on_started(self) -> None:
        pass  # the engine's own `started` event carries what the GUI needs

    def _on_stdout(self) -> None:
        for line in self._stdout.feed(bytes(self._process.readAllStandardOutput().data())):
            self._handle_stdout_line(line)

    def _on_stderr(self) -> None:
        for line in self._stderr.feed(bytes(self._process.readAllStandardError().data())):
            self._log(line)

    def _on_error(self, error: QProcess.ProcessError) -> None:
        # FailedToStart is the one error after which `finished` never comes: it ends the job here.
        # Crashed (and read/write errors) are followed by `finished`, which does the reporting.
        if error != QProcess.ProcessError.FailedToStart or not self._running:
            return
        self._emit_event(ev.Error(
            code="engine_failed_to_start",
            message="The LoRA Studio engine could not be started.",
            hint=f"{self.program}: {self._process.errorString()}",
        ))
        self._end(False)

    def _on_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        if not self._running:
            return
        # Whatever is still in the pipes belongs to this run: read it before judging the exit.
        self._on_stdout()
        self._on_stderr()
        for line in self._stdout.flush():
            self._handle_stdout_line(line)
        for line in self._stderr.flush():
            self._log(line)
        crashed = exit_status != QProcess.ExitStatus.NormalExit
        finished_ok = self.last_finished is not None or not self.require_finished
        success = not crashed and exit_code == 0 and finished_ok
        if not success and self.last_error is None:
            self._emit_event(self._crash_error(exit_code, crashed))
        self._end(success)

    def _crash_error(self, exit_code: int, crashed: bool) -> ev.Error:
        hint = "\n".join(self._stderr_tail)
        if self._force_reason == "timeout":
            return ev.Error(code="engine_killed", hint=hint, message=(
                "Training did not stop in time, so it was ended. The newest checkpoint saved before it is kept."))
        if self._force_reason:
            return ev.Error(code="engine_killed", message="Training was ended before it could finish.", hint=hint)
        if crashed:
            message = "The LoRA Studio engine crashed (it was ended by the system, often for lack of memory)."
        elif exit_code == 0:
            message = "The LoRA Studio engine exited without saying it had finished (exit code 0)."
        else:
            message = f"The LoRA Studio engine stopped unexpectedly (exit code {exit_code})."
        return ev.Error(code="engine_crashed", message=message, hint=hint)

    # --- helpers ------------------------------------------------------------------------------------

    def _handle_stdout_line(self, line: str) -> None:
        if not line.strip():
            return
        event = ev.from_json(line)
        if event is None:
            # A stray print or a newer event type: never fatal. Human text goes to the log.
            if not line.lstrip().startswith("{"):
                self._log(line)
            return
        self._emit_event(event)

    def _emit_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.Finished):
            self.last_finished = event
        elif isinstance(event, ev.Error):
            self.last_error = event
        self.event.emit(event)

    def _log(self, line: str) -> None:
        self._stderr_tail.append(line)
        self.log_line.emit(line)

    def _on_stop_timeout(self) -> None:
        if not self._running:
            return
        self._force_reason = "timeout"
        pid = self._process.processId()
        # Terminate first so a well-behaved engine still gets a chance to flush; kill after the grace.
        self._doomed = kill_process_tree(pid, terminate_first=True) if pid else []
        self._process.terminate()
        self._kill_timer.start(self.kill_grace_ms)

    def _on_kill_timeout(self) -> None:
        if self._running:
            self._kill_now()

    def _kill_now(self) -> None:
        pid = self._process.processId()
        if pid:
            # The children list is taken before the parent dies: orphans cannot be found afterwards.
            self._doomed.extend(kill_process_tree(pid))
        for proc in self._doomed:
            try:
                proc.kill()
            except psutil.Error:
                pass
        self._process.kill()

    def _end(self, success: bool) -> None:
        self._stop_timer.stop()
        self._kill_timer.stop()
        # Children the engine left behind (a stuck data loader worker) must not outlive it.
        for proc in self._doomed:
            try:
                proc.kill()
            except psutil.Error:
                pass
        self._doomed = []
        self._running = False
        RUNNING.release(self)
        self.done.emit(success)
