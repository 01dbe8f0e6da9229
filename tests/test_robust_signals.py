"""Signals: a second Ctrl-C, or one during start-up, exits at once without a traceback and leaves no
half-written file (SIGTERM's clean stop is in test_robust_writers)."""
import signal
import time

import pytest
import torch

import engine.checkpoints
from engine import open_run
from engine.checkpoints import save_checkpoint
from engine.store import checkpoint_dir
from robust_helpers import one_line, traindx, wait_for_rows, write_config


def _stderr_until(proc, words: str, seconds: float = 60) -> str:
    seen, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if words in line:
            return "".join(seen)
    raise AssertionError(f"no {words!r} on stderr: {''.join(seen)[-500:]}")


SLOW_MODEL = """
import time
from torch import nn

class Slow(nn.Module):  # a model whose every step takes a while, as a big one's does
    def __init__(self, input_shape, n_classes):
        super().__init__()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, n_classes))

    def forward(self, x):
        time.sleep(0.2)
        return self.head(x)
"""


def test_a_second_ctrl_c_aborts_at_once_without_a_traceback_and_the_file_says_stopped(tmp_path):
    (tmp_path / "slow.py").write_text(SLOW_MODEL)
    config = write_config(tmp_path, steps=10 ** 6)
    config.write_text(config.read_text().replace('name = "mlp"\nhidden = [16]', 'name = "python:slow.py:Slow"'))
    out = tmp_path / "r.h5"
    proc = traindx("run", config, "--out", out, "--quiet")
    wait_for_rows(out, 1)
    proc.send_signal(signal.SIGINT)
    _stderr_until(proc, "stopping after this step")
    proc.send_signal(signal.SIGINT)  # while the step the first one waits for still runs
    _, err = proc.communicate(timeout=60)
    line = one_line(err)  # after the "stopping" line read above
    assert proc.returncode == 130 and line.startswith(f"traindx: aborted; {out} keeps what was written (status stopped")
    with open_run(out) as run:
        assert run.status == "stopped" and run.events()[-1]["message"].startswith("aborted by a second interrupt")
    assert not list(checkpoint_dir(out).glob("*.tmp")) and not list(tmp_path.glob("*.part"))


def test_ctrl_c_during_start_up_exits_without_a_traceback_and_writes_nothing(tmp_path):
    (tmp_path / "slow.py").write_text(
        "import pathlib, time\n"
        "def data():\n"
        "    pathlib.Path(__file__).with_name('loading').touch()\n"
        "    time.sleep(60)\n")
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('source = "digits"', 'source = "python:slow.py:data"'))
    proc = traindx("run", config, "--out", tmp_path / "r.h5", "--quiet")
    deadline = time.monotonic() + 60
    while not (tmp_path / "loading").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert one_line(err) == "traindx: interrupted before training started; nothing was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loading", "robust.toml", "slow.py"]  # no run file


def test_a_checkpoint_save_cut_short_leaves_no_tmp(tmp_path, monkeypatch):
    def save_then_interrupt(state, path):
        path.write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt
    monkeypatch.setattr(engine.checkpoints.torch, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "r.h5", 7, {"w": torch.zeros(3)}, keep=3)
    assert list(checkpoint_dir(tmp_path / "r.h5").iterdir()) == []
