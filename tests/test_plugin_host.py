import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, tiny_config
from engine import open_run
from engine.config import RunConfig
from engine.plugin import load_plugin_class
from engine.trainer import Trainer


def _trainer(tmp_path, example_table, **sections):
    raw = tiny_config(**sections)
    raw["plugins"] = {"example": example_table}
    return Trainer(RunConfig.from_dict(raw), tmp_path / "p.h5")


def test_example_plugin_end_to_end_through_its_entry_point(tmp_path, example_plugin):
    trainer = _trainer(tmp_path, {"every": 10, "on": "eval", "probe_size": 16})
    assert trainer.run() == "finished"
    plugin = trainer.plugins[0]
    run = open_run(tmp_path / "p.h5")
    steps, values = run.series("example/batch_max_loss")
    assert list(steps) == [10, 20, 30, 40]
    # the ids a plugin sees are the batch's stable sample ids from the training split
    assert all(set(ids) <= set(trainer.train.ids) for ids in plugin.seen_step_ids)
    assert len(plugin.seen_step_ids[0]) == 32
    # evaluation hands over logits, embeddings and metadata of the whole validation split, once
    assert [(s, tuple(l), tuple(e)) for s, l, e, _ in plugin.seen_eval] == [(20, (359, 10), (359, 16)),
                                                                           (40, (359, 10), (359, 16))]
    assert list(run.series("example/val_embedding_norm")[0]) == [20, 40]
    assert run.series("example/table")[1][-1] == {"columns": ["step"], "rows": [[40]]}
    assert list(run.series("example/ended")[0]) == [40]  # the end hook logs at the last step
    assert run.views()["example"][0]["series"] == ["example/batch_max_loss"]
    (finding,) = load_plugin_class("example").findings(run)
    assert finding.step == steps[np.argmax(values)]


def test_probe_set_is_fixed_for_the_run(tmp_path, example_plugin):
    trainer = _trainer(tmp_path, {"every": 10})
    trainer._build()
    a, b = trainer.ctx.probe(16), trainer.ctx.probe(16)
    assert a is b and len(set(a.ids)) == 16
    assert torch.equal(a.targets, torch.as_tensor(trainer.train.y[np.searchsorted(trainer.train.ids, a.ids)]))


def test_a_raising_plugin_is_disabled_with_an_event_and_training_goes_on(tmp_path, example_plugin):
    trainer = _trainer(tmp_path, {"every": 5, "explode_at": 15})
    assert trainer.run() == "finished"
    run = open_run(tmp_path / "p.h5")
    (event,) = [e for e in run.events() if e["kind"] == "plugin_error"]
    assert event["step"] == 15 and "planted failure" in event["message"]
    assert list(run.series("example/batch_max_loss")[0]) == [5, 10]
    assert list(run.series("train/loss")[0]) == list(range(1, 41))


def test_close_is_called_once_however_the_run_ends(tmp_path, example_plugin):
    for status, sections in (("finished", {}),
                             ("diverged", {"run": {"steps": 200}, "optimizer": {"lr": 50.0}, "loss": {"name": "mse"}})):
        (tmp_path / status).mkdir()
        trainer = _trainer(tmp_path / status, {"every": 5}, **sections)
        assert trainer.run() == status
        assert trainer.plugins[0].closed == 1


def test_a_plugin_failing_to_give_its_state_is_disabled_and_the_checkpoint_saved(tmp_path, example_plugin):
    from engine.store import checkpoint_dir
    trainer = _trainer(tmp_path, {"every": 5, "explode_in_state": 1}, run={"checkpoint_every": 20})
    assert trainer.run() == "finished"
    run = open_run(tmp_path / "p.h5")
    (event,) = [e for e in run.events() if e["kind"] == "plugin_error"]
    assert event["step"] == 20 and "planted state failure" in event["message"]
    assert [p.name for p in sorted(checkpoint_dir(tmp_path / "p.h5").glob("step_*.pt"))][-2:] == \
        ["step_00000020.pt", "step_00000040.pt"]
    assert list(run.series("train/loss")[0]) == list(range(1, 41))


def test_plugins_command_lists_installed_plugins(example_plugin):
    out = subprocess.run([sys.executable, "-m", "engine.cli", "plugins"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert "example" in out and "traindx_example:ExamplePlugin" in out


def test_graph_is_kept_only_on_steps_a_plugin_asks_for(tmp_path, example_plugin, monkeypatch):
    cls = load_plugin_class("example")
    seen = {}
    original = cls.on_step

    def on_step(self, ctx):
        seen[ctx.step] = ctx.grads[0].requires_grad
        original(self, ctx)
    monkeypatch.setattr(cls, "wants_graph", lambda self, step: step == 20)
    monkeypatch.setattr(cls, "on_step", on_step)
    assert _trainer(tmp_path, {"every": 10}).run() == "finished"
    assert seen == {10: False, 20: True, 30: False, 40: False}
