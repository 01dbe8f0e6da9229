"""A full disk ends a run cleanly: status failed, one line saying so and where, everything flushed
before kept, no .tmp or .part left, no crash. On a real small tmpfs (root can mount one)."""
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_config
from engine import open_run, run_training
from engine.errors import DiskFullError
from engine.store import SPACE_MARGIN, checkpoint_dir, free_bytes
from robust_helpers import one_line, run_traindx, write_config


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs; ``fill(leave)`` takes all but ``leave`` bytes of it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'mount failed'}); "
                    "these tests need root or a user mount")

    def fill(leave: int) -> None:
        with open(mount / "filler", "wb") as fh:
            fh.write(bytes(free_bytes(mount) - leave))
    yield mount, fill
    subprocess.run(["umount", "-l", str(mount)], check=True)


def _left_behind(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.suffix in (".tmp", ".part", ".lock"))


def test_a_disk_that_fills_during_appends_fails_the_run_in_one_line_keeping_its_rows(small_disk):
    mount, fill = small_disk
    fill(SPACE_MARGIN + 250_000)
    out = mount / "run.h5"
    done = run_traindx("run", write_config(mount.parent, steps=10 ** 6), "--out", out, "--quiet", timeout=180)
    line = one_line(done.stderr)
    assert done.returncode == 1, line  # not a crash (-11, 139) nor a success
    assert line.startswith(f"traindx: the disk is full: ") and str(out) in line and "(status failed)" in line
    with open_run(out) as run:
        steps, losses = run.series("train/loss")
        assert run.status == "failed" and len(steps) > 100
        assert np.array_equal(steps, np.arange(1, len(steps) + 1)) and np.all(np.isfinite(losses))
        assert "the disk is full" in run.events()[-1]["message"]
    assert _left_behind(mount) == []


def test_a_checkpoint_that_does_not_fit_fails_the_run_and_leaves_no_tmp(small_disk):
    mount, fill = small_disk
    fill(SPACE_MARGIN + 1_500_000)  # the run file fits; a 2.4 MB checkpoint (weights, momentum) does not
    cfg = tiny_config(run={"steps": 60, "checkpoint_every": 20}, model={"hidden": [512, 512]},
                      optimizer={"momentum": 0.9})
    with pytest.raises(DiskFullError, match="the disk is full") as err:
        run_training(cfg, mount / "run.h5")
    assert err.value.where == str(checkpoint_dir(mount / "run.h5") / "step_00000020.pt")
    with open_run(mount / "run.h5") as run:
        assert run.status == "failed" and run.length("train/loss") == 20
        assert [e["kind"] for e in run.events()][-1] == "failed"
    assert _left_behind(mount) == [] and not list(checkpoint_dir(mount / "run.h5").glob("*"))
