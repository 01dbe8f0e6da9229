"""One writer per run file: an OS-level lock that the writer holds for its whole life.

The lock is ``flock`` on a small file beside the run file (``RUN.h5.lock``), not on the run file
itself: HDF5 takes its own locks on that, and the writer replaces the file when it creates or
repairs it. The OS drops the lock when its holder dies, even by SIGKILL, so a killed run can be
resumed at once. The lock file holds the writer's process id, for the message that refuses a second
writer.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .errors import RunBusyError

SETTLE_SECONDS = 0.5  # a reader's probe holds the lock for microseconds: worth waiting out


def lock_path(run_path: str | Path) -> Path:
    run_path = Path(run_path)
    return run_path.with_name(run_path.name + ".lock")


class WriterLock:
    """Held by the one process that writes a run file; ``release()`` when the file is closed."""

    def __init__(self, run_path: str | Path):
        self.run_path = Path(run_path)
        self.path = lock_path(run_path)
        self._fd: int | None = None
        deadline = time.monotonic() + SETTLE_SECONDS
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() > deadline:
                    raise RunBusyError(self.run_path, _pid_in(self.path)) from None
                time.sleep(0.02)
                continue
            if _same_file(fd, self.path):
                self._fd = fd
            else:  # the last writer removed the lock file between our open and our lock: again
                os.close(fd)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        """Remove the lock file, then let go (in that order: a waiting writer that opened the old
        file sees it was removed and opens a new one)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        if self._fd is not None:
            os.close(self._fd)


def writer_pid(run_path: str | Path) -> int | None:
    """The process id of the live writer of ``run_path``, 0 if it could not be told, None if none."""
    path = lock_path(run_path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _pid_in(path) or 0
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):  # gone, or the new writer has not written its id yet
        return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
