"""Errors a user can act on: each names the key, the value and what was expected."""
from __future__ import annotations

import difflib
from typing import Any, Iterable


class ConfigError(ValueError):
    """A wrong setting. Its message is one line, fit to print without a traceback."""

    def __init__(self, key: str, value: Any, expected: str, unknown_key: bool = False):
        self.key, self.value, self.expected = key, value, expected
        if unknown_key:
            message = f"{key}: unknown key; expected {expected}"
        else:
            message = f"{key}: got {value!r}, expected {expected}"
        super().__init__(message)


class DataError(ValueError):
    """Data that cannot be trained on (mismatched lengths, labels out of range, NaN inputs)."""


def suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list"}


def describe_expected(kind: type, lo: float | None = None, hi: float | None = None,
                      choices: Iterable | None = None) -> str:
    if choices is not None:
        return "one of " + ", ".join(repr(c) for c in choices)
    word = _TYPE_WORDS.get(kind, kind.__name__)
    if lo is not None and hi is not None:
        return f"{word} in [{lo}, {hi}]"
    if lo is not None:
        return f"{word} ≥ {lo}"
    if hi is not None:
        return f"{word} ≤ {hi}"
    return word


class RunFileError(OSError):
    """A run file that cannot be read or written as asked: damaged, not a run file, or in use by
    another writer. One line that names the file. ``transient`` marks what may pass by itself (a
    writer still making the file), so a follower of a live file tries again instead of giving up."""

    def __init__(self, path, problem: str, transient: bool = False):
        self.path, self.problem, self.transient = str(path), problem, transient
        super().__init__(f"{path}: {problem}")


class RunBusyError(RunFileError):
    """Another live process writes the run file (``pid``: None when it could not be told)."""

    def __init__(self, path, pid: int | None):
        self.pid = pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(path, f"{who} is writing this run file; wait for it to end, stop it, "
                               "or write to another file")


class DiskFullError(OSError):
    """Too little disk space left to write the run file or a checkpoint; raised before writing, so
    what was written before stays whole."""

    def __init__(self, where, free: int, needed: int):
        self.where, self.free, self.needed = str(where), free, needed
        super().__init__(28, f"the disk is full: {_mib(free)} free where {where} is written, "
                             f"at least {_mib(needed)} needed")

    def __str__(self) -> str:
        return self.strerror


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB"
