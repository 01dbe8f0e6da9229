"""The HDF5 run file: ``RunWriter`` (the engine, the only writer) and ``open_run`` (everyone else).

The writer declares every dataset up front, then switches to SWMR so other processes can read the
file while it grows. Appends are buffered in memory and flushed at least every ``flush_seconds``;
a writer killed outright leaves everything up to its last flush readable. The format is documented
in docs/run-file.md.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import __version__

FORMAT = "traindx.run"
FORMAT_VERSION = 1
FINAL_STATUSES = ("finished", "stopped", "failed", "diverged")
LIVE_DTYPE = np.dtype([("status", "S16"), ("heartbeat", "<f8")])
EVENT_DTYPE = np.dtype([("step", "<i8"), ("time", "<f8"), ("kind", "S32"),
                        ("message", h5py.string_dtype())])
_STR = h5py.string_dtype()
CHUNK_BYTES = 2 ** 16  # a chunk is allocated whole on disk: keep rarely-written series small
STALE_SECONDS = 30.0  # a "running" file not flushed for this long by a dead process has crashed


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _storage_dtype(dtype: str):
    return _STR if dtype == "json" else np.dtype(dtype)


def _reopen_for_append(path: Path) -> h5py.File:
    """Open a run file to write more to it. A writer that was killed leaves the file marked as open
    for SWMR writing, and HDF5 refuses to open it for writing again (``h5clear`` would lift the
    mark); such a file is copied through a SWMR reader into a clean one that takes its place."""
    try:
        return h5py.File(path, "r+", libver="latest")
    except OSError as exc:
        if "h5clear" not in str(exc):
            raise
    clean = path.with_name(path.name + ".part")
    with h5py.File(path, "r", libver="latest", swmr=True) as src, h5py.File(clean, "w", libver="latest") as dst:
        dst.attrs.update(src.attrs)
        for name in src:
            src.copy(src[name], dst, name=name)
    os.replace(clean, path)
    return h5py.File(path, "r+", libver="latest")


class RunWriter:
    """Creates (or resumes) a run file; appends series rows and events; closes with a status."""

    def __init__(self, path: str | Path, config_json: str, resume_step: int | None = None,
                 flush_seconds: float = 1.0):
        self.path = Path(path)
        self.flush_seconds = flush_seconds
        self._buffers: dict[str, tuple[list, list]] = {}
        self._events: list[tuple] = []
        self._last_flush = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
            self.f.create_dataset("events", shape=(0,), maxshape=(None,), dtype=EVENT_DTYPE, chunks=(256,))
            self.f.create_dataset("live", shape=(1,), maxshape=(1,), dtype=LIVE_DTYPE, chunks=(1,))
        else:
            self._building = None
            self.f = _reopen_for_append(self.path)
            self._truncate_after(resume_step)
        a = self.f.attrs
        a["config"] = config_json
        a["status"] = "running"
        a["finished_utc"] = ""
        a["writer_pid"], a["writer_host"] = os.getpid(), socket.gethostname()
        self._set_live("running")

    # -- before SWMR --------------------------------------------------------------------------
    def declare_series(self, name: str, shape=(), dtype: str = "float64", unit: str = "",
                       description: str = "") -> None:
        if self.f.swmr_mode:
            raise RuntimeError(f"series {name!r} declared after the run file switched to SWMR")
        if name in self._buffers:
            raise ValueError(f"series {name!r} declared twice")
        shape = tuple(shape)
        self._buffers[name] = ([], [])
        path = f"series/{name}"
        if path in self.f:  # resuming: the datasets exist already
            return
        g = self.f.create_group(path)
        rows = max(1, min(1024, CHUNK_BYTES // (8 * max(1, int(np.prod(shape))))))
        g.create_dataset("step", shape=(0,), maxshape=(None,), dtype="<i8", chunks=(1024,))
        g.create_dataset("value", shape=(0, *shape), maxshape=(None, *shape),
                         dtype=_storage_dtype(dtype), chunks=(rows, *shape))
        g.attrs["dtype"], g.attrs["unit"], g.attrs["description"] = dtype, unit, description

    def write_array(self, path: str, values) -> None:
        """A static array under /data (labels, ids, metadata columns, input previews)."""
        full = f"data/{path}"
        if full in self.f:
            del self.f[full]
        arr = np.asarray(values)
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

    def maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        for name, (steps, values) in self._buffers.items():
            if steps:
                g = self.f[f"series/{name}"]
                n, m = g["step"].shape[0], len(steps)
                value = g["value"]
                value.resize(n + m, axis=0)
                value[n:] = np.asarray(values, dtype=value.dtype if value.dtype != _STR else object)
                g["step"].resize(n + m, axis=0)  # step last: a reader never sees a step without its value
                g["step"][n:] = steps
                steps.clear()
                values.clear()
        if self._events:
            ev = self.f["events"]
            n = ev.shape[0]
            ev.resize(n + len(self._events), axis=0)
            ev[n:] = np.array(self._events, dtype=EVENT_DTYPE)
            self._events.clear()
        self._set_live(self._live_status)
        self.f.flush()
        self._last_flush = time.monotonic()

    def _set_live(self, status: str) -> None:
        """Status and heartbeat live in a dataset: SWMR readers see dataset writes, not attribute changes."""
        self._live_status = status
        self.f["live"][0] = (status.encode(), time.time())

    def close(self, status: str) -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"status {status!r} is not one of {FINAL_STATUSES}")
        self.f.attrs["status"] = status
        self.f.attrs["finished_utc"] = _utc_now()
        self._live_status = status
        self.flush()
        self.f.close()

    # -- resuming -----------------------------------------------------------------------------
    def _truncate_after(self, step: int) -> None:
        def visit(name, obj):
            if isinstance(obj, h5py.Group) and "step" in obj and "value" in obj:
                keep = int(np.searchsorted(obj["step"][:], step, side="right"))
                obj["step"].resize(keep, axis=0)
                obj["value"].resize(keep, axis=0)
        self.f["series"].visititems(visit)
        ev = self.f["events"]
        keep = int(np.sum(ev["step"][:] <= step)) if ev.shape[0] else 0
        ev.resize(keep, axis=0)


class RunReader:
    """Reads a run file, live or finished or crashed. Keeps the file open; ``refresh()`` sees new rows."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.f = h5py.File(self.path, "r", libver="latest", swmr=True)
        except OSError as exc:
            raise OSError(f"{self.path}: not a readable run file ({exc})") from None
        if self.f.attrs.get("format") != FORMAT:
            self.f.close()
            raise OSError(f"{self.path}: not a TrainDx run file (format attribute missing)")

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- attributes -----------------------------------------------------------------------------
    def _attr(self, key: str, default=None):
        value = self.f.attrs.get(key, default)
        return value.decode() if isinstance(value, bytes) else value

    def _live(self) -> tuple[str, float]:
        live = self.f["live"]
        live.refresh()
        status, heartbeat = live[0]
        return status.decode(), float(heartbeat)

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
    def config(self) -> dict:
        return json.loads(self._attr("config", "{}"))["config"]

    @property
    def config_json(self) -> str:
        return self._attr("config", "{}")

    @property
    def meta(self) -> dict:
        keys = ("format_version", "traindx_version", "created_utc", "finished_utc")
        out = {k: self._attr(k) for k in keys}
        out.update(json.loads(self._attr("environment", "{}")))
        return out

    # -- series ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Nothing to do: every read below refreshes the datasets it touches."""

    def names(self) -> list[str]:
        out = []
        self.f["series"].visititems(lambda n, o: out.append(n) if isinstance(o, h5py.Group) and "step" in o else None)
        return sorted(out)

    def series_info(self, name: str) -> dict:
        g = self._group(name)
        return {"dtype": g.attrs.get("dtype", "float64"), "unit": g.attrs.get("unit", ""),
                "description": g.attrs.get("description", ""), "shape": g["value"].shape[1:]}

    def length(self, name: str) -> int:
        g = self._group(name)
        g["step"].refresh()
        return g["step"].shape[0]

    def series(self, name: str, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) from row ``start`` on; JSON series come back as parsed objects."""
        g = self._group(name)
        step, value = g["step"], g["value"]
        step.refresh()
        value.refresh()
        n = min(step.shape[0], value.shape[0])
        steps, values = step[start:n], value[start:n]
        if g.attrs.get("dtype") == "json":
            values = [json.loads(v.decode() if isinstance(v, bytes) else v) for v in values]
        return steps, values

    def row_at(self, name: str, step: int | None = None):
        """The row written at ``step`` (or the last one at or before it; the latest if None)."""
        steps, _ = self.series(name)
        if len(steps) == 0:
            return None, None
        i = len(steps) - 1 if step is None else max(0, int(np.searchsorted(steps, step, side="right")) - 1)
        g = self._group(name)
        value = g["value"][i]
        if g.attrs.get("dtype") == "json":
            value = json.loads(value.decode() if isinstance(value, bytes) else value)
        return int(steps[i]), value

    def _group(self, name: str) -> h5py.Group:
        try:
            return self.f[f"series/{name}"]
        except KeyError:
            raise KeyError(f"{self.path.name} has no series {name!r}; it has {', '.join(self.names())}") from None

    # -- the rest -------------------------------------------------------------------------------
    def events(self) -> list[dict]:
        ev = self.f["events"]
        ev.refresh()
        return [{"step": int(r["step"]), "time": float(r["time"]), "kind": r["kind"].decode(),
                 "message": r["message"].decode() if isinstance(r["message"], bytes) else r["message"]}
                for r in ev[:]]

    def views(self) -> dict[str, list[dict]]:
        return {name: json.loads(g.attrs.get("views", "[]")) for name, g in self.f["plugins"].items()}

    def plugin_titles(self) -> dict[str, str]:
        return {name: str(g.attrs.get("title", name)) for name, g in self.f["plugins"].items()}

    def plugin_descriptions(self) -> dict[str, str]:
        return {name: str(g.attrs.get("description", "")) for name, g in self.f["plugins"].items()}

    def data(self, path: str) -> np.ndarray:
        arr = self.f[f"data/{path}"]
        if h5py.check_string_dtype(arr.dtype):
            return arr.asstr()[()]
        return arr[()]

    def has_data(self, path: str) -> bool:
        return f"data/{path}" in self.f


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
    """Open a run file for reading: live, finished or crashed."""
    return RunReader(path)
