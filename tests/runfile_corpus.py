"""A corpus of damaged run files, each made from a real run file the engine wrote: the damage a
user meets (a copy cut short, a foreign or empty file, a file edited by hand or by a buggy tool).

``build_corpus(good, folder)`` returns {name: (path, words)}: ``words`` is what the reader's one-line
message must say about that damage.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py


def _cut(fraction):
    def make(src: Path, dst: Path) -> None:
        data = src.read_bytes()
        dst.write_bytes(data[:int(len(data) * fraction)])
    return make


def _bytes(content: bytes):
    return lambda src, dst: dst.write_bytes(content)


def _foreign(src: Path, dst: Path) -> None:
    with h5py.File(dst, "w") as f:
        f["measurements"] = list(range(10))
        f.attrs["instrument"] = "not TrainDx"


def _edit(change):
    """A copy of the good file changed with h5py, as a tool editing it by hand would."""
    def make(src: Path, dst: Path) -> None:
        shutil.copyfile(src, dst)
        with h5py.File(dst, "r+") as f:
            change(f)
    return make


def _delete(name: str):
    return _edit(lambda f: f.__delitem__(name))


def _set_attr(key: str, value, where: str = "/"):
    def change(f):
        f[where].attrs[key] = value
    return _edit(change)


def _del_attr(key: str):
    return _edit(lambda f: f.attrs.__delitem__(key))


def _live_as_floats(f) -> None:
    del f["live"]
    f["live"] = [1.0, 2.0]


def _view_without_title(f) -> None:
    views = json.loads(f["plugins/core"].attrs["views"])
    del views[0]["title"]
    f["plugins/core"].attrs["views"] = json.dumps(views)


def _values_shorter_than_steps(f) -> None:
    value = f["series/train/loss/value"]
    value.resize(value.shape[0] // 2, axis=0)


def _huge_extent(f) -> None:
    f["series/train/loss/value"].resize(10 ** 12, axis=0)  # reading it all would take 8 TB


DAMAGE = {  # name: (how to make it, what the message must say)
    "truncated_90": (_cut(0.9), "truncated"),
    "truncated_50": (_cut(0.5), "truncated"),
    "random_bytes": (_bytes(os.urandom(8192)), "not an HDF5 file"),
    "zero_bytes": (_bytes(b""), "empty file"),
    "foreign_hdf5": (_foreign, "not a TrainDx run file"),
    "no_live": (_delete("live"), "/live is missing"),
    "no_events": (_delete("events"), "/events is missing"),
    "no_series": (_delete("series"), "/series is missing"),
    "no_config": (_del_attr("config"), "config attribute is missing"),
    "bad_json_config": (_set_attr("config", "{not json"), "config attribute is not valid JSON"),
    "bad_json_environment": (_set_attr("environment", "{\"device\": "), "environment attribute is not valid JSON"),
    "bad_json_views": (_set_attr("views", "[{]", "plugins/core"), "views attribute is not valid JSON"),
    "live_wrong_type": (_edit(_live_as_floats), "/live is not one (status, heartbeat) row"),
    "view_without_title": (_edit(_view_without_title), "view 0 has no title"),
    "values_shorter_than_steps": (_edit(_values_shorter_than_steps), "steps but only"),
    "huge_extent": (_edit(_huge_extent), "/series/train/loss/value claims (1000000000000,) rows, more than"),
    "unknown_format_version": (_set_attr("format_version", 99), "format_version 99 is newer"),
}


def build_corpus(good: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (make, words) in DAMAGE.items():
        path = folder / f"{name}.h5"
        make(good, path)
        out[name] = (path, words)
    return out
