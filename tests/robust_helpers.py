"""Real `traindx run` processes for the robustness tests: a small config, a way to start one and wait
until its run file has rows."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT

CONFIG = """
[run]
name = "robust"
steps = {steps}
eval_every = 100
checkpoint_every = {checkpoint_every}
threads = 1
[data]
source = "digits"
batch_size = 32
[model]
name = "mlp"
hidden = {hidden}
[optimizer]
lr = 0.05
"""


def write_config(folder: Path, steps: int = 200, checkpoint_every: int = 0, hidden=(16,)) -> Path:
    path = folder / "robust.toml"
    path.write_text(CONFIG.format(steps=steps, checkpoint_every=checkpoint_every, hidden=list(hidden)))
    return path


def traindx(*args, cwd=ROOT, **kwargs) -> subprocess.Popen:
    """``traindx ARGS`` in its own process (stderr captured as text)."""
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, **kwargs)


def run_traindx(*args, timeout: float = 120, cwd=ROOT) -> subprocess.CompletedProcess:
    proc = traindx(*args, cwd=cwd)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for_rows(path: Path, rows: int = 20, seconds: float = 60) -> None:
    """Until the live run file holds at least ``rows`` training steps."""
    from engine import open_run
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open_run(path) as run:
                if run.length("train/loss") >= rows:
                    return
        except (OSError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{path} did not reach {rows} rows in {seconds} s")


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]

