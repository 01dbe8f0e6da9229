"""Opening a run file so that no damage can hang or kill the program that reads it.

Two things in HDF5 make a damaged file dangerous to a SWMR reader: a SWMR open skips HDF5's own
check that the file is as long as its superblock says, and a SWMR read whose checksum fails is
retried 100 times with a sleep that doubles each time (hours, on a file cut short). So the length
is checked first, metadata reads are retried a bounded number of times, and the structure the
format promises (docs/run-file.md) is checked before anyone reads: every damaged file fails at once
with one line that names it and says what is wrong.
"""
from __future__ import annotations

import ctypes
import functools
import json
import os
import struct
from pathlib import Path

import h5py
import numpy as np

from .errors import RunFileError
from .lock import writer_pid

FORMAT = "traindx.run"
FORMAT_VERSION = 1
FINAL_STATUSES = ("finished", "stopped", "failed", "diverged")  # a writer that wrote one closed the file
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
METADATA_READ_ATTEMPTS = 20  # back-off of at most 2**20 ns in all: still outlasts a writer's flush
EVENT_FIELDS = ("step", "time", "kind", "message")


def open_checked(path: Path) -> h5py.File:
    """The run file opened for SWMR reading, after its length and structure were checked."""
    check_length(path)
    f = open_swmr(path)
    try:
        check_structure(f, path)
    except BaseException:
        f.close()
        raise
    return f


def check_length(path: Path) -> None:
    """A file shorter than its superblock's end-of-file address was cut short: refuse it before
    HDF5 reads past its end (superblock versions 2 and 3, the ones SWMR files have)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(48)
    except FileNotFoundError:
        raise RunFileError(path, "no such file") from None
    except IsADirectoryError:
        raise RunFileError(path, "a folder, not a run file") from None
    if size == 0:
        raise RunFileError(path, "an empty file (0 bytes), not a run file")
    if head[:8] != HDF5_SIGNATURE or head[8] not in (2, 3) or head[9] not in (4, 8) or len(head) < 48:
        return  # not a superblock this check knows: HDF5's open will say what it is
    offset = {4: "<I", 8: "<Q"}[head[9]]
    base = struct.unpack_from(offset, head, 12)[0]
    stored_eof = base + struct.unpack_from(offset, head, 12 + 2 * head[9])[0]
    if size < stored_eof:
        live = writer_pid(path) is not None  # a live writer may be extending it right now
        raise RunFileError(path, f"truncated or damaged: it holds {size:,} bytes, its superblock records "
                                 f"{stored_eof:,} ({100 * size / stored_eof:.0f} %)", transient=live)


def open_swmr(path: Path) -> h5py.File:
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    limit = _read_attempts_setter()
    if limit is not None:
        limit(fapl.id, METADATA_READ_ATTEMPTS)
    try:
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
    except OSError as exc:
        text = str(exc)
        if "signature" in text:
            raise RunFileError(path, "not an HDF5 file, so not a run file") from None
        if "lock" in text:  # a writer has it open, not yet in SWMR mode (it is making or repairing it)
            raise RunFileError(path, "a writer has it open and is preparing it; try again in a moment",
                               transient=True) from None
        raise RunFileError(path, f"not a readable run file ({_first_line(text)})") from None
    return h5py.File(fid)


@functools.cache
def _read_attempts_setter():
    """HDF5's ``H5Pset_metadata_read_attempts``, which h5py does not wrap: looked up through h5py's
    own extension module, so it is the library h5py uses; None where it cannot be found."""
    try:
        fn = ctypes.CDLL(h5py.h5p.__file__).H5Pset_metadata_read_attempts
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int64, ctypes.c_uint], ctypes.c_int
    return fn


def check_structure(f: h5py.File, path: Path) -> None:
    """Everything docs/run-file.md promises a reader, checked once at open."""
    try:
        _check_root(f, path)
        closed = f["live"][0]["status"].decode(errors="replace") in FINAL_STATUSES
        _check_datasets(f, path, path.stat().st_size, closed)
    except RunFileError:
        raise
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:  # h5py, damaged
        raise RunFileError(path, f"damaged ({_first_line(str(exc))})") from None


def _check_root(f: h5py.File, path: Path) -> None:
    if text_attr(f.attrs, "format") != FORMAT:
        raise RunFileError(path, f"not a TrainDx run file (no format attribute {FORMAT!r})")
    version = f.attrs.get("format_version")
    if not isinstance(version, (int, np.integer)) or isinstance(version, bool) or version < 1:
        raise RunFileError(path, f"format_version {version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise RunFileError(path, f"format_version {int(version)} is newer than this TrainDx reads "
                                 f"(up to {FORMAT_VERSION}): upgrade TrainDx to open it")
    config = json_attr(f.attrs, "config", path)
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise RunFileError(path, 'the config attribute is not {"config": {...}}')
    if "environment" in f.attrs and not isinstance(json_attr(f.attrs, "environment", path), dict):
        raise RunFileError(path, "the environment attribute is not a JSON object")
    for name, kind in (("series", h5py.Group), ("events", h5py.Dataset), ("live", h5py.Dataset)):
        if not isinstance(f.get(name), kind):
            raise RunFileError(path, f"/{name} is missing")
    live = f["live"]
    names = live.dtype.names or ()
    if names != ("status", "heartbeat") or live.dtype["status"].kind != "S" \
            or live.dtype["heartbeat"].kind != "f" or live.shape != (1,):
        raise RunFileError(path, f"/live is not one (status, heartbeat) row: {live.dtype}, shape {live.shape}")
    if (f["events"].dtype.names or ()) != EVENT_FIELDS or f["events"].ndim != 1:
        raise RunFileError(path, f"/events is not a list of {', '.join(EVENT_FIELDS)} rows")
    for name, group in f.get("plugins", {}).items():
        _check_plugin(group, f"/plugins/{name}", path)


def _check_plugin(group, where: str, path: Path) -> None:
    if not isinstance(group, h5py.Group):  # h5py gives None for a link it cannot follow
        raise RunFileError(path, f"{where} is damaged")
    views = json_attr(group.attrs, "views", path, where) if "views" in group.attrs else []
    if not isinstance(views, list):
        raise RunFileError(path, f"{where}: views is not a list")
    for i, view in enumerate(views):
        if not isinstance(view, dict):
            raise RunFileError(path, f"{where}: view {i} is not a JSON object")
        for key, kind in (("kind", str), ("title", str), ("series", list)):
            if not isinstance(view.get(key), kind):
                raise RunFileError(path, f"{where}: view {i} has no {key}")
    if "settings" in group.attrs and not isinstance(json_attr(group.attrs, "settings", path, where), list):
        raise RunFileError(path, f"{where}: settings is not a list")


def _check_datasets(f: h5py.File, path: Path, size: int, closed: bool) -> None:
    """Series are (step, value) pairs with a value for every step; no dataset claims more bytes than
    the file holds (a damaged extent would otherwise make a reader allocate without bound). Visited
    through h5py's low-level API: a tenth of the time of its objects, on a file of many series.
    A file its writer never closed may hold more steps than values in a series: a writer killed
    mid-flush, whose extents HDF5 wrote in its own order; readers keep the rows that have both."""
    datasets = {}

    def visit(name: bytes, info):
        if info.type == h5py.h5o.TYPE_DATASET:
            ds = h5py.h5d.open(f.id, name)
            datasets[name.decode(errors="replace")] = (ds.shape, ds.get_type())

    h5py.h5o.visit(f.id, visit, info=True)
    for name, (shape, kind) in datasets.items():
        if int(np.prod(shape, dtype=np.float64)) * kind.get_size() > size:  # a string: its 8-byte pointer
            raise RunFileError(path, f"/{name} claims {shape} rows, more than the file's {size:,} bytes hold")
    for name, (shape, kind) in datasets.items():
        if not (name.startswith("series/") and name.endswith("/step")):
            continue
        series = name[len("series/"):-len("/step")]
        value = datasets.get(f"series/{series}/value")
        if value is None:
            raise RunFileError(path, f"series {series} has steps but no value dataset")
        if len(shape) != 1 or kind.get_class() != h5py.h5t.INTEGER or not value[0]:
            raise RunFileError(path, f"series {series}: step has shape {shape}, value {value[0]}")
        if closed and value[0][0] < shape[0]:
            raise RunFileError(path, f"series {series} has {shape[0]} steps but only {value[0][0]} values")


def text_attr(attrs, key: str, default=None):
    value = attrs.get(key, default)
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def json_attr(attrs, key: str, path: Path, where: str = ""):
    """The attribute parsed as JSON; ``where``: the group, for the message (the root if empty)."""
    text = text_attr(attrs, key)
    where = f"{where}: " if where else ""
    if not isinstance(text, str):
        raise RunFileError(path, f"{where}the {key} attribute is missing or not text")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RunFileError(path, f"{where}the {key} attribute is not valid JSON ({exc})") from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
