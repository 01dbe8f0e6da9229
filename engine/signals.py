"""Stopping a run from outside. SIGINT (Ctrl-C) and SIGTERM ask the loop to stop after the current
step, with a checkpoint to resume from (status ``stopped``). A second signal, or one before
training has started, aborts at once: it arrives as KeyboardInterrupt, which the trainer answers
by closing the run file as ``stopped`` and which the command reports in one line."""
from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover - typing only (the trainer imports torch)
    from .trainer import Control


class StopOnSignal:
    """Installs the handlers; ``watch(on_status)`` wraps a status callback to learn when training
    has started (the trainer says ``state: running`` once its run file is open); after ``done()``
    signals are ignored (the run file is closed: nothing is left to stop)."""

    def __init__(self, control: "Control", say: Callable[[str], None] = lambda text: None):
        self.control, self.say = control, say
        self.started = self.finished = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def watch(self, on_status: Callable[[dict], None]) -> Callable[[dict], None]:
        def status(msg: dict) -> None:
            if msg.get("kind") == "state" and msg.get("state") == "running":
                self.started = True
            on_status(msg)
        return status

    def done(self) -> None:
        self.finished = True

    def _handle(self, signum, frame) -> None:
        if self.finished:
            return
        if not self.started or self.control.stop_requested:
            raise KeyboardInterrupt
        self.control.stop()
        self.say(f"{signal.Signals(signum).name}: stopping after this step (again to abort)…")
