"""Checkpoints beside a run file: written whole or not at all, and read back only into the run
they belong to (the run id is stored in both the run file and each checkpoint)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import ConfigError, DiskFullError, RunFileError
from .store import SPACE_MARGIN, checkpoint_dir, ensure_space, free_bytes, latest_checkpoint, open_run

PICKLE_OVERHEAD = 2 ** 16


def save_checkpoint(run_path: Path, step: int, state: dict, keep: int) -> Path:
    """``state`` as ``step_NNNNNNNN.pt``; then only the latest ``keep`` are kept (0: all). The disk
    must hold it and still leave the run file room to close; a save cut short leaves no ``.tmp``."""
    folder = checkpoint_dir(run_path)
    path = folder / f"step_{step:08d}.pt"
    needed = _tensor_bytes(state) + PICKLE_OVERHEAD + SPACE_MARGIN
    ensure_space(path, needed)
    folder.mkdir(parents=True, exist_ok=True)  # with the first checkpoint, not before
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(state, tmp)
    except BaseException as exc:  # a full disk, or a second Ctrl-C
        tmp.unlink(missing_ok=True)
        free = free_bytes(folder)
        if isinstance(exc, (OSError, RuntimeError)) and free < needed:  # torch says "unexpected pos"
            raise DiskFullError(path, free, needed) from None
        raise
    os.replace(tmp, path)  # a checkpoint file is either whole or absent
    for old in sorted(folder.glob("step_*.pt"))[:-keep] if keep else ():
        old.unlink()
    return path


def load_checkpoint(run_path: Path, device: torch.device) -> dict:
    """The latest checkpoint of the run in ``run_path``; refused if it belongs to another run."""
    path = latest_checkpoint(run_path)
    if path is None:
        raise ConfigError("--resume", str(run_path), f"a run with checkpoints in {checkpoint_dir(run_path)}")
    with open_run(run_path) as run:
        run_id = run.run_id
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # cut short, or not a checkpoint
        raise RunFileError(path, f"not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if state.get("run_id") != run_id:
        raise RunFileError(path, f"a checkpoint of another run (run id {state.get('run_id')}) than the one in "
                                 f"{run_path} (run id {run_id}); move it away, or start a new run")
    return state


def check_resume_length(run_path: Path, start: int, total: int, run: dict) -> None:
    """A resumed run must have steps left: never 'step 3500/1500' and a finished file. ``run``: the
    config's [run] section, whose steps or epochs gave ``total``."""
    if start >= total:
        key = "steps" if run["steps"] is not None else "epochs"
        raise ConfigError(f"run.{key}", run[key], f"more than the {start} steps {run_path} has trained already "
                          f"(the config trains {total}); to train it further on purpose, resume with "
                          f"--set run.{key}=N")


def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0
