"""Running sweeps as jobs: every model's sweep in a fresh child process, whatever happens to it.

Why a process per model (timm's bulk runner and torchbench isolate models for the same reasons):
allocator fragmentation, cuDNN's algorithm choices, dynamo's caches and a CUDA context killed by
a sticky error (illegal memory access, device-side assert) cannot leak into the next model. The
parent writes the rows, drives the progress bar and the summary; the child only measures and
sends its rows back through a pipe. A child that dies (segfault, sticky CUDA error, the kernel's
OOM killer, any signal, or silence past a timeout) becomes a row with status `crashed` and the
child's last error line, and the run goes on with the next model.

Children come from a fork server that has imported torch and timm once (`forkserver`), so a
child costs a fork, not a fresh interpreter; where there is no fork server (Windows) they are
spawned. The fork server never touches CUDA, so every child starts with a clean device.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.cli import error_line
from suite.steps import StickyCudaError
from suite.sweep import Instruments, ModelJob, sweep_model

OnMessage = Callable[[str, Any], None]

#: Exit codes a child uses for what it could report itself.
EXIT_STICKY = 70
EXIT_FAILED = 71


@dataclass
class Outcome:
    """How a job ended: `crashed` with the error line and what it was measuring, or not."""

    crashed: bool = False
    error: str = ""
    at: tuple[str, int] | None = None
    env: dict[str, Any] | None = None
    dead_context: bool = False


@dataclass
class _Tracker:
    """What the parent learns from a job's messages, kept to describe a crash."""

    on_message: OnMessage
    current: tuple[str, int] | None = None
    env: dict[str, Any] | None = None
    fatal: str = ""
    done: bool = False
    rows: int = 0

    def __call__(self, kind: str, payload: Any) -> None:
        if kind == "start":
            self.current = tuple(payload)
        elif kind == "row":
            self.current = None
            self.rows += 1
        elif kind == "env":
            self.env = payload
        elif kind == "fatal":
            self.fatal = payload
            return
        elif kind == "done":
            self.done = True
            return
        self.on_message(kind, payload)


class InProcessRunner:
    """Runs each sweep in this process (`--in-process`, for debugging). A sticky CUDA error leaves
    the context unusable, so the outcome says the run cannot go on."""

    def __init__(self, instruments: Instruments) -> None:
        self.instruments = instruments

    def run(self, job: ModelJob, on_message: OnMessage) -> Outcome:
        tracker = _Tracker(on_message)
        try:
            sweep_model(job, self.instruments, tracker)
        except StickyCudaError as exc:
            return Outcome(True, str(exc), tracker.current, tracker.env, dead_context=True)
        return Outcome(False, env=tracker.env)

    def close(self) -> None:
        """Nothing to release: the sweep ran here."""


def _child_main(job: ModelJob, instruments: Instruments, conn: Any, stderr_path: str) -> None:
    """The child: stderr to a file the parent reads on a crash, the sweep, its messages up the pipe.

    Ctrl-C is the parent's to handle (it stops its children itself), so the child ignores SIGINT.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 2)
    os.close(log)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as the process
    faulthandler.enable(sys.stderr)

    def emit(kind: str, payload: Any) -> None:
        conn.send((kind, payload))

    try:
        sweep_model(job, instruments, emit)
    except StickyCudaError as exc:
        # The CUDA context is dead: report, then leave without any clean-up that would touch it.
        emit("fatal", str(exc))
        sys.stderr.flush()
        os._exit(EXIT_STICKY)
    except BaseException as exc:  # noqa: BLE001 - anything else is this job's crash, reported
        traceback.print_exc()
        emit("fatal", error_line(exc))
        sys.stderr.flush()
        os._exit(EXIT_FAILED)
    emit("done", None)
    conn.close()


def _context() -> Any:
    """The fork server where the platform has one (torch and timm imported once), else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["suite.sweep"])
        return context
    return multiprocessing.get_context("spawn")


def death_reason(exitcode: int | None) -> str:
    """'killed by SIGKILL', 'sticky CUDA error', 'exit code 3', ... for a child's exit code (negative: a signal)."""
    if exitcode is None:
        return "did not exit"
    if exitcode == EXIT_STICKY:
        return "sticky CUDA error"
    if exitcode == EXIT_FAILED:
        return "failed"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


_ERROR_WORDS = re.compile(r"error|exception|fatal|abort|killed", re.IGNORECASE)


def last_error_line(text: str) -> str:
    """The last line of a child's stderr that names an error (a traceback's last line, a segfault's
    'Fatal Python error'), else its last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if _ERROR_WORDS.search(line) and not line.startswith("File ")]
    return (named or lines or [""])[-1]


@dataclass
class ChildRunner:
    """Runs each sweep in a fresh child process and turns its death into an outcome.

    `silence_s`: a child that sends nothing for this long (a hung GPU, a deadlock) is killed and
    recorded as crashed; None waits for ever. `echo` receives the child's stderr lines (each
    distinct line once per run), so warnings still reach the user.
    """

    instruments: Instruments
    silence_s: float | None = None
    echo: Callable[[str], None] | None = None
    _seen: set[str] = field(default_factory=set)
    _folder: tempfile.TemporaryDirectory | None = None
    _process: Any = None

    def _log_path(self, job: ModelJob) -> Path:
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="suite-jobs-")
        safe = "".join(ch if ch.isalnum() else "_" for ch in job.spec.name)
        return Path(self._folder.name) / f"{safe}.stderr"

    def run(self, job: ModelJob, on_message: OnMessage) -> Outcome:
        context = _context()
        receive, send = context.Pipe(duplex=False)
        log_path = self._log_path(job)
        process = context.Process(target=_child_main, args=(job, self.instruments, send, str(log_path)),
                                  name=f"suite-{job.spec.name}")
        process.start()
        send.close()
        self._process = process
        tracker = _Tracker(on_message)
        killed_for_silence = False
        try:
            killed_for_silence = self._listen(process, receive, tracker)
        finally:
            if process.is_alive() and not tracker.done:
                process.kill()
        receive.close()
        process.join()
        stderr = log_path.read_text(errors="replace") if log_path.exists() else ""
        self._echo(stderr)
        if tracker.done and process.exitcode == 0:
            return Outcome(False, env=tracker.env)
        if killed_for_silence:
            error = f"no message for {self.silence_s:g} s: killed"
        else:
            reason = death_reason(process.exitcode)
            detail = tracker.fatal or last_error_line(stderr)
            error = f"{reason}: {detail}" if detail else reason
        return Outcome(True, error, tracker.current, tracker.env)

    def _listen(self, process: Any, receive: Any, tracker: _Tracker) -> bool:
        """Hand the child's messages to `tracker` until it ends; True if it was killed for silence."""
        last_heard = time.monotonic()
        while True:
            if receive.poll(0.2):
                try:
                    kind, payload = receive.recv()
                except (EOFError, OSError):
                    return False
                last_heard = time.monotonic()
                tracker(kind, payload)
            elif not process.is_alive():
                if not receive.poll(0):
                    return False
            elif self.silence_s is not None and time.monotonic() - last_heard > self.silence_s:
                process.kill()
                return True

    def _echo(self, stderr: str) -> None:
        if self.echo is None:
            return
        for line in stderr.splitlines():
            if line.strip() and line not in self._seen:
                self._seen.add(line)
                self.echo(line)

    def close(self) -> None:
        """Stop a child still running (the run was interrupted) and remove the stderr logs."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
