"""Data-parallel training under torchrun: two CPU processes (gloo) follow the same steps as one
process with the whole batch, and rank 0 alone writes the run file."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from engine import open_run
from engine.config import RunConfig
from engine.errors import ConfigError
from engine.store import checkpoint_dir
from engine.trainer import Trainer

CONFIG = """
[run]
steps = 40
eval_every = 20
checkpoint_every = 20
threads = 1
[data]
batch_size = 64
val_fraction = 0.2005  # 1,437 training samples: an epoch's last batch (29) splits 15/14 between ranks
[model]
name = "mlp"
hidden = [16]
[optimizer]
name = "sgd"
lr = 0.1
momentum = 0.9
[plugins.calibration]
on = "eval"
[plugins.sharpness]
every = 20
probe_size = 128
batch_every = 10
budget = 0.0
slices = "off"
"""


def test_two_ranks_follow_the_single_process_run(tmp_path):
    config = tmp_path / "ddp.toml"
    config.write_text(CONFIG)
    cli = ["-m", "engine.cli", "run", str(config), "--quiet"]
    subprocess.run([sys.executable, *cli, "--out", str(tmp_path / "one.h5")], cwd=ROOT, check=True, timeout=120)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *cli, "--out", str(tmp_path / "two.h5")], cwd=ROOT, timeout=180,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("finished:") == 1  # one line for the run, not one per rank
    one, two = open_run(tmp_path / "one.h5"), open_run(tmp_path / "two.h5")
    assert two.status == "finished"
    for name in ("train/loss", "train/accuracy", "grad_norm", "val/loss", "calibration/ece", "sharpness/lambda_max"):
        s1, v1 = one.series(name)
        s2, v2 = two.series(name)
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_allclose(v2, v1, rtol=1e-4, err_msg=name)  # only the summation order differs
    kinds = [e["kind"] for e in two.events()]
    assert kinds.count("started") == 1 and kinds.count("finished") == 1 and "sharpness_no_graph" in kinds
    assert [p.name for p in sorted(checkpoint_dir(tmp_path / "two.h5").glob("*.pt"))] == \
        ["step_00000020.pt", "step_00000040.pt"]


def test_a_batch_the_ranks_cannot_share_evenly_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")  # refused before any process group is started
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    with pytest.raises(ConfigError, match="data.batch_size.*64.*multiple of the 3 processes"):
        Trainer(RunConfig.from_toml(config), tmp_path / "x.h5").run()
