"""The engine process the GUI starts: training in a spawned child, control in, status out.

Spawned, not forked: CUDA does not survive a fork, and a crash in training must never take the
window down. The parent never blocks: ``poll()`` drains status messages without waiting.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import traceback
from pathlib import Path

COMMANDS = ("pause", "resume", "stop", "checkpoint")


class EngineProcess:
    """One training run in a child process."""

    def __init__(self, config, out_path: str | Path, resume: bool = False):
        self.config_json = config.to_json()
        self.out_path = Path(out_path)
        self.resume = resume
        self.process = None
        self._reported_exit = False

    def start(self) -> None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # inherited by the child before torch loads
        ctx = mp.get_context("spawn")
        self._control, child_end = ctx.Pipe()
        self._status = ctx.Queue()
        self.process = ctx.Process(target=_child_main, name="traindx-engine",
                                   args=(self.config_json, str(self.out_path), self.resume, child_end,
                                         self._status))
        self.process.start()
        child_end.close()

    def send(self, command: str) -> None:
        if command not in COMMANDS:
            raise ValueError(f"command {command!r} is not one of {COMMANDS}")
        try:
            self._control.send(command)
        except (BrokenPipeError, OSError):
            pass  # the child is gone; poll() reports how it ended

    def pause(self) -> None:
        self.send("pause")

    def resume_training(self) -> None:
        self.send("resume")

    def stop(self) -> None:
        self.send("stop")

    def checkpoint(self) -> None:
        self.send("checkpoint")

    def poll(self) -> list[dict]:
        """Status messages received so far; ends with {"kind": "exit", ...} once the child is gone."""
        out = []
        while True:
            try:
                out.append(self._status.get_nowait())
            except queue.Empty:
                break
        if not out and self.process is not None and not self.process.is_alive() and not self._reported_exit:
            self._reported_exit = True
            out.append({"kind": "exit", "exitcode": self.process.exitcode})
        return out

    def is_alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    @property
    def exitcode(self) -> int | None:
        return None if self.process is None else self.process.exitcode

    def join(self, timeout: float | None = None) -> None:
        self.process.join(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()


def _child_main(config_json: str, out_path: str, resume: bool, control_conn, status_queue) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .config import RunConfig
    from .signals import StopOnSignal
    from .trainer import Control, Trainer

    control = Control()
    stop = StopOnSignal(control)  # SIGTERM (or the terminal's Ctrl-C) stops the run like the Stop button

    def listen() -> None:
        actions = {"pause": control.pause, "resume": control.resume, "stop": control.stop,
                   "checkpoint": control.checkpoint}
        while True:
            try:
                command = control_conn.recv()
            except (EOFError, OSError):  # the parent went away: finish cleanly
                control.stop()
                return
            actions[command]()

    threading.Thread(target=listen, daemon=True, name="traindx-control").start()
    try:
        config = RunConfig.from_json(config_json)
        Trainer(config, out_path, control, stop.watch(status_queue.put), resume).run()
    except (KeyboardInterrupt, Exception) as exc:  # KeyboardInterrupt: a second signal aborted it
        status_queue.put({"kind": "error", "message": _message(exc), "traceback": traceback.format_exc()})
        status_queue.close()
        status_queue.join_thread()
        raise SystemExit(1)
    status_queue.close()
    status_queue.join_thread()


def _message(exc: BaseException) -> str:
    """The line the window shows: the user's own errors (config, data, run file, disk) as they are."""
    from .errors import ConfigError, DataError, DiskFullError, RunFileError
    if isinstance(exc, KeyboardInterrupt):
        return "aborted by a signal"
    if isinstance(exc, (ConfigError, DataError, DiskFullError, RunFileError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
