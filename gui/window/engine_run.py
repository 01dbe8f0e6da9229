"""The engine process of the run being trained, seen from the window: start it, send it pause,
resume, stop and checkpoint, and turn its status messages into a state and signals."""
from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore

FINAL = ("finished", "stopped", "failed", "diverged", "crashed")
ACTIVE = ("starting", "running", "paused")


class EngineRun(QtCore.QObject):
    """One engine process at a time; ``state`` is idle, starting, running, paused, or how it ended."""

    state_changed = QtCore.Signal(str)
    progress = QtCore.Signal(dict)  # the engine's progress message: step, total, steps_per_s, eta_s
    log = QtCore.Signal(str)  # a line for the engine log
    exited = QtCore.Signal(object, str, bool)  # exit code, error message, whether it ended unexpectedly

    def __init__(self, parent=None):
        super().__init__(parent)
        self.process = None
        self.state = "idle"
        self.error = ""
        self._timer = QtCore.QTimer(self, interval=100)
        self._timer.timeout.connect(self._poll)

    def launch(self, config, out: Path, resume: bool = False) -> None:
        from engine.worker import EngineProcess
        self.process = EngineProcess(config, out, resume=resume)
        self.process.start()
        verb = "continuing" if resume else "started"
        self.log.emit(f"{verb} engine (pid {self.process.process.pid}) → {out}")
        self._timer.start()
        self.set_state("starting")

    def set_state(self, state: str) -> None:
        self.state = state
        self.state_changed.emit(state)

    # -- control ----------------------------------------------------------------------------------
    def toggle_pause(self) -> None:
        if self.process is None:
            return
        if self.state == "running":
            self.process.pause()
        elif self.state == "paused":
            self.process.resume_training()

    def stop(self) -> bool:
        if self.process is not None and self.state in ACTIVE:
            self.process.stop()
            return True
        return False

    def checkpoint(self) -> bool:
        if self.process is not None and self.state in ("running", "paused"):
            self.process.checkpoint()
            return True
        return False

    def shutdown(self) -> None:
        self._timer.stop()
        if self.process is not None:
            self.process.stop()
            self.process.join(10)
            self.process.kill()
            self.process = None

    # -- status -----------------------------------------------------------------------------------
    def _poll(self) -> None:
        """Drain the engine's status messages (non-blocking)."""
        if self.process is None:
            self._timer.stop()
            return
        for msg in self.process.poll():
            kind = msg.get("kind")
            if kind == "progress":
                self.progress.emit(msg)
                if self.state == "starting":
                    self.set_state("running")
            elif kind == "state":
                self.set_state(msg["state"])
                if msg.get("message"):
                    self.log.emit(msg["message"])
            elif kind == "error":
                self.log.emit(msg.get("traceback") or msg.get("message", ""))
                self.error = msg.get("message", "")
            elif kind == "exit":
                self._on_exit(msg.get("exitcode"))

    def _on_exit(self, exitcode) -> None:
        self._timer.stop()
        error, unexpected = self.error, self.state not in FINAL
        if unexpected:
            self.set_state("failed" if error else "crashed")
        self.log.emit(f"engine exited with code {exitcode}")
        self.process = None
        self.error = ""
        self.exited.emit(exitcode, error, unexpected)
