"""The HDF5 run file: ``RunWriter`` (the engine, the only writer) and ``open_run`` (everyone else).

The writer declares every dataset up front, then switches to SWMR so other processes can read the
file while it grows. Appends are buffered in memory and flushed at least every ``flush_seconds``;
a writer killed outright leaves everything up to its last flush readable. One writer per file: it
holds an OS-level lock for its life (``engine.lock``). It never lets HDF5 run out of disk space
(HDF5 cannot recover from a failed write: the file tears and the process may crash): each write
first checks that the disk holds what it needs plus a margin to close the file cleanly. The
format is documented in docs/run-file.md.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import __version__
from .errors import DiskFullError, RunBusyError, RunFileError
from .lock import WriterLock, writer_pid
from .runfile_check import FINAL_STATUSES, FORMAT, FORMAT_VERSION, json_attr, open_checked, open_swmr, text_attr

LIVE_DTYPE = np.dtype([("status", "S16"), ("heartbeat", "<f8")])
EVENT_DTYPE = np.dtype([("step", "<i8"), ("time", "<f8"), ("kind", "S32"),
                        ("message", h5py.string_dtype())])
_STR = h5py.string_dtype()
CHUNK_BYTES = 2 ** 16  # a chunk is allocated whole on disk: keep rarely-written series small
STEP_CHUNK = 1024
EVENT_CHUNK = 256
STALE_SECONDS = 30.0  # a "running" file not flushed for this long by a dead process has crashed
SPACE_MARGIN = 2 ** 20  # kept free by every flush, so the file can always be closed with its status
OPEN_RETRY_SECONDS = (0.05, 0.2, 0.5)  # a live file's writer may be in the middle of a flush
READ_RETRY_SECONDS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.6)  # about the engine's 1 s between flushes


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _storage_dtype(dtype: str):
    return _STR if dtype == "json" else np.dtype(dtype)


def free_bytes(folder: Path) -> int:
    """Bytes a write may still take where ``folder`` lies (or would, once made)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def ensure_space(where: Path, needed: int) -> None:
    """Refuse a write of ``needed`` bytes (margin included) before it starts, where it would not fit."""
    free = free_bytes(where.parent)
    if free < needed:
        raise DiskFullError(where, free, needed)


def safe_file_name(name: str) -> str:
    """A run name as a file name that stays in its folder: no separators, no leading dots."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "run"


def free_name(path: Path) -> Path:
    """``NAME-2.h5``, ``NAME-3.h5``, ...: the first name beside ``path`` with no run file or checkpoints."""
    n = 2
    while True:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists() and not checkpoint_dir(candidate).exists():
            return candidate
        n += 1


def check_target(path: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse, before anything is written, to write where it would destroy a run silently: over a
    folder, over an existing run file without ``overwrite``, or beside another live writer."""
    if path.is_dir():
        raise RunFileError(path, f"a folder; give the run file's name, e.g. {path / 'run.h5'}")
    pid = writer_pid(path)
    if pid is not None:
        raise RunBusyError(path, pid or None)
    if path.exists() and not (resume or overwrite):
        raise RunFileError(path, "a run file is already there; pass --overwrite (overwrite=True in Python) to "
                                 f"replace it and its checkpoints, --resume to continue it, or write to "
                                 f"{free_name(path)}")


def _reopen_for_append(path: Path) -> h5py.File:
    """Open a run file to write more to it. A writer that was killed leaves the file marked as open
    for SWMR writing, and HDF5 refuses to open it for writing again (``h5clear`` would lift the
    mark); such a file is copied through a SWMR reader into a clean one that takes its place."""
    try:
        return h5py.File(path, "r+", libver="latest")
    except OSError as exc:
        if "h5clear" not in str(exc):
            raise RunFileError(path, f"cannot be opened to continue it ({exc})") from None
    clean = path.with_name(path.name + ".part")
    ensure_space(path, path.stat().st_size + SPACE_MARGIN)
    try:
        with open_swmr(path) as src, h5py.File(clean, "w", libver="latest") as dst:
            dst.attrs.update(src.attrs)
            _copy_whole_rows(src, dst)
    except BaseException:
        clean.unlink(missing_ok=True)
        raise
    os.replace(clean, path)
    return h5py.File(path, "r+", libver="latest")


def _copy_whole_rows(src: h5py.File, dst: h5py.File) -> None:
    """Copy a killed writer's file: every series and the events up to their last whole row that
    reads (its last flush may have left rows whose strings never reached the disk, and HDF5's own
    copy refuses the whole file for one of them), the rest as it is."""
    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Group):
            group = dst["series"].require_group(name)
            group.attrs.update(obj.attrs)
            if "step" in obj and "value" in obj:
                values = readable_rows(obj["value"], min(obj["step"].shape[0], obj["value"].shape[0]))
                _copy_rows(obj["step"], group, obj["step"][:len(values)])
                _copy_rows(obj["value"], group, values)
    for name, obj in src.items():
        if name == "series":
            dst.create_group(name).attrs.update(obj.attrs)
            obj.visititems(visit)
        elif name == "events":
            _copy_rows(obj, dst, readable_rows(obj, obj.shape[0]))
        else:
            src.copy(obj, dst, name=name)


def _copy_rows(src: h5py.Dataset, dst: h5py.Group, rows: np.ndarray) -> None:
    """A dataset like ``src`` (type, chunks, growth, filters, attributes) in ``dst``, holding ``rows``."""
    out = dst.create_dataset(src.name.rsplit("/", 1)[1], shape=(len(rows), *src.shape[1:]), maxshape=src.maxshape,
                             dtype=src.dtype, chunks=src.chunks, compression=src.compression,
                             compression_opts=src.compression_opts, shuffle=src.shuffle)
    out.attrs.update(src.attrs)
    if len(rows):
        out[...] = rows


def readable_rows(dset: h5py.Dataset, n: int) -> np.ndarray:
    """``dset[:n]``, or where some of its last rows point at strings a killed writer never wrote
    (HDF5 wrote a flush's rows and extent, not yet its strings), its longest prefix that reads."""
    try:
        return dset[:n]
    except OSError:
        if not dset.dtype.hasobject:
            raise
    good, bad = 0, n  # dset[:good] reads and dset[:bad] does not
    while bad - good > 1:
        mid = (good + bad) // 2
        try:
            dset[:mid]
            good = mid
        except OSError:
            bad = mid
    return dset[:good]


class RunWriter:
    """Creates (or resumes) a run file; appends series rows and events; closes with a status.

    ``overwrite`` lets a new run replace an existing file, whose checkpoints go with it once the new
    file takes its place. ``run_id`` names this run in the file and in its checkpoints."""

    def __init__(self, path: str | Path, config_json: str, resume_step: int | None = None,
                 flush_seconds: float = 1.0, overwrite: bool = False):
        self.path = Path(path)
        self.flush_seconds = flush_seconds
        self._buffers: dict[str, tuple[list, list]] = {}
        self._row_bytes: dict[str, tuple[int, int]] = {}  # name -> (bytes of a row, of its chunks)
        self._events: list[tuple] = []
        self._last_flush = time.monotonic()
        self._building: Path | None = None
        self._overwrite = overwrite
        self.f = None
        check_target(self.path, resume=resume_step is not None, overwrite=overwrite)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ensure_space(self.path, SPACE_MARGIN)
        self._lock = WriterLock(self.path)
        try:
            self._open(config_json, resume_step)
        except BaseException:
            self.abandon()
            raise

    def _open(self, config_json: str, resume_step: int | None) -> None:
        if resume_step is None:
            # Built under a temporary name and moved into place once in SWMR mode, so a reader
            # never opens a half-made file.
            self._building = self.path.with_name(self.path.name + ".part")
            self.f = h5py.File(self._building, "w", libver="latest")
            a = self.f.attrs
            a["format"], a["format_version"], a["traindx_version"] = FORMAT, FORMAT_VERSION, __version__
            a["created_utc"] = _utc_now()
            self.f.create_group("series")
            self.f.create_group("data")
            self.f.create_group("plugins")
            self.f.create_dataset("events", shape=(0,), maxshape=(None,), dtype=EVENT_DTYPE,
                                  chunks=(EVENT_CHUNK,))
            self.f.create_dataset("live", shape=(1,), maxshape=(1,), dtype=LIVE_DTYPE, chunks=(1,))
        else:
            self.f = _reopen_for_append(self.path)
            self._truncate_after(resume_step)
        a = self.f.attrs
        self.run_id = text_attr(a, "run_id") or uuid.uuid4().hex  # files from before run ids get one
        a["run_id"] = self.run_id
        a["config"] = config_json
        a["status"] = "running"
        a["finished_utc"] = ""
        a["writer_pid"], a["writer_host"] = os.getpid(), socket.gethostname()
        self._set_live("running")

    def abandon(self) -> None:
        """Undo a start that failed before ``start_swmr``: no half-made file stays behind, and the
        lock is let go."""
        if self.f is not None:
            try:
                self.f.close()
            except (OSError, RuntimeError):
                pass
        if self._building is not None:
            self._building.unlink(missing_ok=True)
        self._lock.release()

    # -- before SWMR --------------------------------------------------------------------------
    def declare_series(self, name: str, shape=(), dtype: str = "float64", unit: str = "",
                       description: str = "") -> None:
        if self.f.swmr_mode:
            raise RuntimeError(f"series {name!r} declared after the run file switched to SWMR")
        if name in self._buffers:
            raise ValueError(f"series {name!r} declared twice")
        shape = tuple(shape)
        self._buffers[name] = ([], [])
        row = 8 + int(np.prod(shape)) * (32 if dtype == "json" else np.dtype(dtype).itemsize)
        rows = max(1, min(1024, CHUNK_BYTES // (8 * max(1, int(np.prod(shape))))))
        self._row_bytes[name] = (row, rows * row + 8 * STEP_CHUNK)
        path = f"series/{name}"
        if path in self.f:  # resuming: the datasets exist already
            return
        g = self.f.create_group(path)
        g.create_dataset("step", shape=(0,), maxshape=(None,), dtype="<i8", chunks=(STEP_CHUNK,))
        g.create_dataset("value", shape=(0, *shape), maxshape=(None, *shape),
                         dtype=_storage_dtype(dtype), chunks=(rows, *shape))
        g.attrs["dtype"], g.attrs["unit"], g.attrs["description"] = dtype, unit, description

    def write_array(self, path: str, values) -> None:
        """A static array under /data (labels, ids, metadata columns, input previews)."""
        full = f"data/{path}"
        if full in self.f:
            del self.f[full]
        arr = np.asarray(values)
        ensure_space(self.path, arr.nbytes + SPACE_MARGIN)
        if arr.dtype.kind in "OUS":
            self.f.create_dataset(full, data=np.asarray([str(v) for v in arr.ravel()], dtype=object)
                                  .reshape(arr.shape), dtype=_STR)
        else:
            self.f.create_dataset(full, data=arr)

    def write_plugin_info(self, name: str, title: str, description: str, settings, views: list[dict]) -> None:
        g = self.f.require_group(f"plugins/{name}")
        g.attrs["title"], g.attrs["description"] = title, description
        g.attrs["settings"] = json.dumps([{"name": s.name, "default": s.default, "help": s.help}
                                          for s in settings])
        g.attrs["views"] = json.dumps(views)

    def set_attr(self, key: str, value: Any) -> None:
        self.f.attrs[key] = value

    def start_swmr(self) -> None:
        self.f.flush()
        self.f.swmr_mode = True
        if self._building is not None:
            if self._overwrite:  # the old run's checkpoints go with the file they belong to
                shutil.rmtree(checkpoint_dir(self.path), ignore_errors=True)
            os.replace(self._building, self.path)
            self._building = None

    # -- while training -----------------------------------------------------------------------
    def append(self, name: str, step: int, value) -> None:
        steps, values = self._buffers[name]
        steps.append(step)
        values.append(value)

    def append_many(self, name: str, steps, values) -> None:
        """Many rows at once (e.g. importing a finished run)."""
        buf_steps, buf_values = self._buffers[name]
        buf_steps.extend(np.asarray(steps).tolist())
        buf_values.extend(list(values))

    def event(self, step: int, kind: str, message: str = "") -> None:
        self._events.append((step, time.time(), kind.encode()[:32], message))

    def last_value(self, name: str, default: float = 0.0) -> float:
        """The series' last row in the file (e.g. the wall time a resumed run goes on from)."""
        value = self.f[f"series/{name}/value"]
        n = self.f[f"series/{name}/step"].shape[0]
        return float(value[n - 1]) if n else default

    def tail(self, name: str, n: int) -> np.ndarray:
        """The series' last ``n`` values in the file (e.g. the losses a resumed run's spike detector
        compares its first steps with)."""
        value = self.f[f"series/{name}/value"]
        rows = self.f[f"series/{name}/step"].shape[0]
        return value[max(0, rows - n):rows]

    def flush_due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.flush_seconds

    def maybe_flush(self) -> None:
        if self.flush_due():
            self.flush()

    def flush(self, margin: int = SPACE_MARGIN) -> None:
        """Write the buffered rows. Raises DiskFullError, writing nothing, where the disk would be
        left with less than ``margin`` bytes (the room to close the file)."""
        ensure_space(self.path, self._bytes_to_flush() + margin)
        written = []
        for name, (steps, values) in self._buffers.items():
            if steps:
                self._buffers[name] = ([], [])  # taken first: an interrupt never writes a row twice
                g = self.f[f"series/{name}"]
                value = g["value"]
                n = value.shape[0]
                value.resize(n + len(values), axis=0)
                value[n:] = np.asarray(values, dtype=value.dtype if value.dtype != _STR else object)
                written.append((g["step"], steps))
        if written:
            # Values on disk before the steps that make them visible: HDF5 writes one flush's pieces
            # in its own order, so a writer killed in it could leave a row (or a string it points
            # at) unwritten under a step; a reader never sees a step without its whole value.
            self.f.flush()
        for step, steps in written:
            n = step.shape[0]
            step.resize(n + len(steps), axis=0)
            step[n:] = steps
        if self._events:
            events, self._events = sorted(self._events, key=lambda e: e[0]), []  # a spike's step comes late
            ev = self.f["events"]
            n = ev.shape[0]
            ev.resize(n + len(events), axis=0)
            ev[n:] = np.array(events, dtype=EVENT_DTYPE)
        self._set_live(self._live_status)
        self.f.flush()
        self._last_flush = time.monotonic()

    def _bytes_to_flush(self) -> int:
        """An upper bound of what the next flush writes: the rows, and a new chunk for each series
        that gets rows (chunks are allocated whole), the events and their chunk."""
        total = EVENT_CHUNK * EVENT_DTYPE.itemsize
        for name, (steps, values) in self._buffers.items():
            if steps:
                row, chunks = self._row_bytes[name]
                text = sum(len(v) for v in values) if isinstance(values[0], str) else 0
                total += len(steps) * row + text + chunks
        return total + sum(EVENT_DTYPE.itemsize + len(e[3].encode()) for e in self._events)

    def _set_live(self, status: str) -> None:
        """Status and heartbeat live in a dataset: SWMR readers see dataset writes, not attribute changes."""
        self._live_status = status
        self.f["live"][0] = (status.encode(), time.time())

    def close(self, status: str) -> None:
        """Write the final status and close. Where even that does not fit on the disk, the file is
        left as its last flush made it (readers report the run as crashed) and DiskFullError raised."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"status {status!r} is not one of {FINAL_STATUSES}")
        try:
            ensure_space(self.path, self._bytes_to_flush() + 2 ** 16)  # before anything is changed
            self.f.attrs["status"] = status
            self.f.attrs["finished_utc"] = _utc_now()
            self._live_status = status
            self.flush(margin=0)
        finally:
            self.f.close()
            self._lock.release()

    # -- resuming -----------------------------------------------------------------------------
    def _truncate_after(self, step: int) -> None:
        def visit(name, obj):
            if isinstance(obj, h5py.Group) and "step" in obj and "value" in obj:
                keep = min(int(np.searchsorted(obj["step"][:], step, side="right")), obj["value"].shape[0])
                obj["step"].resize(keep, axis=0)
                obj["value"].resize(keep, axis=0)
        self.f["series"].visititems(visit)
        ev = self.f["events"]
        kept = ev[:][ev["step"][:] <= step] if ev.shape[0] else ev[:0]
        ev.resize(len(kept), axis=0)  # events are by step but for a loss spike's, written once it is over
        ev[:] = kept


class _BadRow(ValueError):
    """A row that is not what its series says (bad JSON): damage, not worth reading again."""


def _retried(what: str):
    """A read of a live file can meet what the writer is flushing (about 1 in 7,000 reads): most
    often a variable-length string the writer's next flush completes, which only a fresh handle
    then sees. So it is tried again a few times, through a reopened file, for about as long as the
    engine takes between flushes; what still fails is damage, reported with the file and the object."""
    def decorate(method):
        @functools.wraps(method)
        def read(self, *args, **kwargs):
            for attempt, delay in enumerate((*READ_RETRY_SECONDS, None)):
                try:
                    if attempt:
                        self._reopen()
                    return method(self, *args, **kwargs)
                except (OSError, RuntimeError, ValueError) as exc:  # RunFileError too: a reopen failed
                    if delay is None or isinstance(exc, _BadRow):
                        problem = exc.problem if isinstance(exc, RunFileError) else str(exc).strip()
                        line = problem.splitlines()[0] if problem else type(exc).__name__
                        raise RunFileError(self.path, f"cannot read {what.format(*args)}: {line}") from None
                    time.sleep(delay)
        return read
    return decorate


class RunReader:
    """Reads a run file, live or finished or crashed. Keeps the file open; ``refresh()`` sees new rows.

    A damaged file fails here, at once, with a RunFileError naming it (see ``engine.runfile_check``).
    Attributes are read once: SWMR readers do not see the writer change them anyway."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        for delay in (*OPEN_RETRY_SECONDS, None):
            try:
                self.f = open_checked(self.path)
                break
            except RunFileError as exc:
                if not exc.transient or delay is None:
                    raise
                time.sleep(delay)
        attrs = self.f.attrs
        self._config = json_attr(attrs, "config", self.path)
        self._meta = {k: text_attr(attrs, k) for k in ("format_version", "traindx_version", "created_utc",
                                                        "finished_utc")}
        if "environment" in attrs:
            self._meta.update(json_attr(attrs, "environment", self.path))
        plugins = self.f.get("plugins", {})
        self._views = {name: json_attr(g.attrs, "views", self.path, f"/plugins/{name}") if "views" in g.attrs else []
                       for name, g in plugins.items()}
        self._titles = {name: str(text_attr(g.attrs, "title", name)) for name, g in plugins.items()}
        self._descriptions = {name: str(text_attr(g.attrs, "description", "")) for name, g in plugins.items()}

    def close(self) -> None:
        self.f.close()

    def _reopen(self) -> None:
        """A fresh handle on the file. The old one is closed first: HDF5 gives a second handle on a
        file this process has open the first one's view of it."""
        self.f.close()
        self.f = open_swmr(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- attributes -----------------------------------------------------------------------------
    def _attr(self, key: str, default=None):
        return text_attr(self.f.attrs, key, default)

    @_retried("/live")
    def _live(self) -> tuple[str, float]:
        live = self.f["live"]
        live.refresh()
        status, heartbeat = live[0]
        return status.decode(errors="replace"), float(heartbeat)

    @property
    def raw_status(self) -> str:
        """The status the writer last wrote ("running" for a live *or* crashed run)."""
        return self._live()[0]

    @property
    def status(self) -> str:
        """Like ``raw_status``, but "crashed" for a run whose writer died without closing the file."""
        status = self.raw_status
        if status == "running" and not self._writer_alive():
            return "crashed"
        return status

    @property
    def finished(self) -> bool:
        return self.raw_status in FINAL_STATUSES

    def _writer_alive(self) -> bool:
        if self._attr("writer_host") == socket.gethostname():
            return _pid_alive(int(self._attr("writer_pid", -1)))
        return time.time() - self._live()[1] < STALE_SECONDS

    @property
    def run_id(self) -> str | None:
        """The id this run's checkpoints carry too (None in files from before run ids)."""
        return self._attr("run_id")

    @property
    def config(self) -> dict:
        return self._config["config"]

    @property
    def config_json(self) -> str:
        return self._attr("config", "{}")

    @property
    def meta(self) -> dict:
        return dict(self._meta)

    # -- series ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Nothing to do: every read below refreshes the datasets it touches."""

    @_retried("its series")
    def names(self) -> list[str]:
        out = []
        self.f["series"].visititems(lambda n, o: out.append(n) if isinstance(o, h5py.Group) and "step" in o else None)
        return sorted(out)

    def series_info(self, name: str) -> dict:
        g = self._group(name)
        return {"dtype": g.attrs.get("dtype", "float64"), "unit": g.attrs.get("unit", ""),
                "description": g.attrs.get("description", ""), "shape": g["value"].shape[1:]}

    @_retried("series {0}")
    def length(self, name: str) -> int:
        """Rows with both a step and a value (see ``series``)."""
        g = self._group(name)
        g["step"].refresh()
        g["value"].refresh()
        return min(g["step"].shape[0], g["value"].shape[0])

    @_retried("series {0}")
    def series(self, name: str, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) from row ``start`` on; JSON series come back as parsed objects."""
        g = self._group(name)
        step, value = g["step"], g["value"]
        step.refresh()
        value.refresh()
        n = min(step.shape[0], value.shape[0])
        steps, values = step[start:n], value[start:n]
        if g.attrs.get("dtype") == "json":
            values = [_parse_json(v) for v in values]
        return steps, values

    @_retried("series {0}")
    def row_at(self, name: str, step: int | None = None):
        """The row written at ``step`` (or the last one at or before it; the latest if None)."""
        g = self._group(name)
        steps = g["step"][:self.length(name)]
        if len(steps) == 0:
            return None, None
        i = len(steps) - 1 if step is None else max(0, int(np.searchsorted(steps, step, side="right")) - 1)
        value = g["value"][i]
        if g.attrs.get("dtype") == "json":
            value = _parse_json(value)
        return int(steps[i]), value

    def _group(self, name: str) -> h5py.Group:
        try:
            return self.f[f"series/{name}"]
        except KeyError:
            raise KeyError(f"{self.path.name} has no series {name!r}; it has {', '.join(self.names())}") from None

    # -- the rest -------------------------------------------------------------------------------
    @_retried("/events")
    def events(self) -> list[dict]:
        ev = self.f["events"]
        ev.refresh()
        try:
            rows = ev[:]
        except OSError:
            if self.finished or self._writer_alive():
                raise  # a live writer's next flush completes them (tried again); in a closed file, damage
            rows = readable_rows(ev, ev.shape[0])  # all that a writer killed mid-flush left whole
        return [{"step": int(r["step"]), "time": float(r["time"]), "kind": r["kind"].decode(errors="replace"),
                 "message": r["message"].decode(errors="replace") if isinstance(r["message"], bytes)
                 else r["message"]}
                for r in rows]

    def views(self) -> dict[str, list[dict]]:
        return dict(self._views)

    def plugin_titles(self) -> dict[str, str]:
        return dict(self._titles)

    def plugin_descriptions(self) -> dict[str, str]:
        return dict(self._descriptions)

    @_retried("/data/{0}")
    def data(self, path: str) -> np.ndarray:
        arr = self.f[f"data/{path}"]
        if h5py.check_string_dtype(arr.dtype):
            return arr.asstr()[()]
        return arr[()]

    def has_data(self, path: str) -> bool:
        return f"data/{path}" in self.f


def _parse_json(value):
    text = value.decode() if isinstance(value, bytes) else value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _BadRow(f"a row is not valid JSON ({exc})") from None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def checkpoint_dir(run_path: str | Path) -> Path:
    """Where a run's checkpoints go: ``NAME.ckpt/`` beside ``NAME.h5``."""
    return Path(run_path).with_suffix(".ckpt")


def latest_checkpoint(run_path: str | Path) -> Path | None:
    files = sorted(checkpoint_dir(run_path).glob("step_*.pt"))  # step numbers are zero-padded
    return files[-1] if files else None


def open_run(path: str | Path) -> RunReader:
    """Open a run file for reading: live, finished or crashed. Raises RunFileError (an OSError)
    with one line naming the file where it is not a readable run file."""
    return RunReader(path)
