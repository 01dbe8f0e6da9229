"""The opposing-signals plugin in real engine runs on the planted synthetic-opposing data (the shipped
example config), read back from the run file: the planted pair is found soon after its losses go
into anti-phase, the control never joins it, nothing is found where nothing is planted, each loss
spike is attributed to the pair, and the logged group losses match an independent replay."""
from __future__ import annotations

import copy
import json
import re
import shutil
import tomllib
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import ROOT, assert_reads_as_stated
from engine import open_run, run_training
from engine.config import RunConfig
from engine.data import BatchOrder, load_data
from engine.errors import ConfigError
from engine.models import build_model
from engine.plugin import validate_plugin_table
from engine.cli import main
from engine.explain import explain, run_spikes, spike_findings
from engine.spikes import find_spikes
from engine.store import checkpoint_dir
from plugins.opposing_signals.plugin import OpposingSignalsPlugin, pair_moves

EXAMPLE = ROOT / "assets" / "examples" / "opposing-signals.toml"
PLANTED_STEPS = 900


def example(steps=PLANTED_STEPS, sharpness=True, **data) -> dict:
    cfg = tomllib.loads(EXAMPLE.read_text())
    cfg["run"].update(steps=steps, eval_every=steps, threads=1)
    cfg["data"].update(data)
    if sharpness:  # the top eigenvalue only: what the spike findings quote
        cfg["plugins"]["sharpness"].update(trace=False, slices="off", batch_every=0)
    else:
        del cfg["plugins"]["sharpness"]
    return cfg


def train(path, cfg):
    assert run_training(cfg, path) == "finished"
    run = open_run(path)
    errors = [e["message"] for e in run.events() if e["kind"] == "plugin_error"]
    assert not errors, errors
    return run


def replay(cfg: dict):
    """The same full-batch training in plain PyTorch: every training sample's loss at every step,
    (steps, n) in the order of the training split's ids."""
    c = RunConfig.from_dict(cfg)
    run, data = c.sections["run"], c.sections["data"]
    torch.manual_seed(run["seed"])
    bundle = load_data(data["source"], data["val_fraction"], run["seed"], c.base_dir, data)
    order = BatchOrder(len(bundle.train), data["batch_size"], run["seed"])
    model = build_model(c.sections["model"], bundle.input_shape, bundle.n_classes, c.base_dir)
    opt = torch.optim.SGD(model.parameters(), lr=c.sections["optimizer"]["lr"])
    losses = np.zeros((run["steps"], len(bundle.train)))
    for step in range(1, run["steps"] + 1):
        idx = order.indices(step)
        target = torch.nn.functional.one_hot(bundle.train.y[idx], bundle.n_classes).float()
        per_sample = 0.5 * (model(bundle.train.x[idx]) - target).pow(2).sum(dim=1)
        opt.zero_grad()
        per_sample.mean().backward()
        opt.step()
        losses[step - 1, idx.numpy()] = per_sample.detach().numpy()
    return losses, bundle.train.ids, bundle.train.metadata["group"]


def anti_phase_onset(losses, group, window=50, below=-0.9) -> int:
    """The first step whose preceding ``window`` steps see the planted groups' mean losses change
    in anti-phase (correlation of their changes below ``below``)."""
    da, db = (np.diff(losses[:, group == g].mean(axis=1)) for g in ("a", "b"))
    for t in range(window, len(da)):
        if np.corrcoef(da[t - window:t], db[t - window:t])[0, 1] < below:
            return t + 1  # da[t - 1] is the change into step t + 1
    raise AssertionError("the planted groups never went into anti-phase")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    cfg = example()
    run = train(tmp_path_factory.mktemp("planted") / "run.h5", cfg)
    return run, cfg, replay(cfg)


def groups_of(run):
    ids, group = run.data("train/ids"), run.data("train/meta/group")
    return dict(zip(ids.tolist(), group.tolist()))


# ---------------------------------------------------------------------------------------------
# The known answer
# ---------------------------------------------------------------------------------------------
def test_the_planted_pair_is_found_within_500_steps_of_the_anti_phase(planted):
    run, cfg, (losses, ids, group) = planted
    onset = anti_phase_onset(losses, group)
    assert onset < PLANTED_STEPS - 500
    of = groups_of(run)
    planted_ids = {g: {i for i, v in of.items() if v == g} for g in ("a", "b")}
    steps, rows = run.series("opposing_signals/groups")
    due = [(int(s), r) for s, r in zip(steps, rows) if onset < s <= onset + 500]
    assert due  # with the default cadence
    for step, row in due:
        (pair,) = row["pairs"]
        sides = [Counter(of[i] for i in pair[side]) for side in ("a", "b")]
        mains = [side.most_common(1)[0] for side in sides]
        assert {m[0] for m in mains} == {"a", "b"}, (step, sides)
        for (main, n), side, key in zip(mains, sides, ("a", "b")):
            assert n / len(pair[key]) >= 0.95, (step, sides)  # each side from one planted group
        reported = set(pair["a"]) | set(pair["b"])
        truth = planted_ids["a"] | planted_ids["b"]
        precision, recall = len(reported & truth) / len(reported), len(reported & truth) / len(truth)
        assert precision >= 0.9 and recall >= 0.8, (step, precision, recall)


def test_the_control_group_never_makes_up_more_than_a_tenth_of_a_pair(planted):
    run, *_ = planted
    of = groups_of(run)
    rows = run.series("opposing_signals/groups")[1]
    assert sum(len(r["pairs"]) for r in rows) >= len(rows) - 2
    for row in rows:
        for pair in row["pairs"]:
            members = pair["a"] + pair["b"]
            assert sum(of[i] == "control" for i in members) <= 0.1 * len(members)
    assert any(of[i] == "control" for r in rows for g in r["unpaired"] for i in g["ids"])  # seen, not paired


def test_the_run_file_row_names_samples_by_their_ids_in_the_source(planted):
    run, cfg, _ = planted
    source = load_data("synthetic-opposing", 0.2, 0, ROOT, RunConfig.from_dict(cfg).sections["data"])
    assert np.array_equal(run.data("train/ids"), source.train.ids)
    step, row = run.row_at("opposing_signals/groups")
    assert set(row) >= {"pairs", "unpaired", "window", "steps", "candidates"}
    assert row["steps"] == list(range(row["window"][0], step + 1)) and row["window"][1] == step
    pair = row["pairs"][0]
    assert set(pair) >= {"a", "b", "loss_corr", "grad_cos", "feature", "feature_share", "sides", "loss_a",
                         "loss_b"}
    assert len(pair["loss_a"]) == len(pair["loss_b"]) == len(row["steps"])
    assert pair["feature"] in {f"input pixel (row {r}, column {c})" for r in (0, 1) for c in (0, 1)}
    a, b = pair["sides"]
    assert (a["classes"], b["classes"]) == ({"0": len(pair["a"])}, {"1": len(pair["b"])})  # side A: class 0
    source_rows = {"a": np.flatnonzero(load_meta(cfg) == "a"), "b": np.flatnonzero(load_meta(cfg) == "b")}
    assert set(pair["a"]) <= set(source_rows["a"].tolist()) and set(pair["b"]) <= set(source_rows["b"].tolist())
    assert all(set(g) >= {"ids", "size", "classes", "predicted", "feature", "mean_loss", "examples"}
               for g in [*row["unpaired"], *pair["sides"]])
    for side in pair["sides"]:  # the most unstable members, to look at
        assert set(side["examples"]) <= set(side["ids"]) and len(side["examples"]) == min(8, side["size"])
    json.dumps(row)  # plain JSON


def load_meta(cfg):
    from engine.sources import opposing
    return opposing.load(RunConfig.from_dict(cfg).sections["data"])["meta"]["group"]


def test_logged_group_losses_match_an_independent_replay(planted):
    run, cfg, (losses, ids, group) = planted
    loss_steps, loss = run.series("train/loss")
    np.testing.assert_allclose(loss, losses.mean(axis=1), rtol=1e-5)  # the replay is the same training
    position = {int(i): k for k, i in enumerate(ids)}
    g_steps, rows = run.series("opposing_signals/groups")
    t_steps, top = run.series("opposing_signals/top_pair_loss")
    np.testing.assert_array_equal(t_steps, loss_steps)  # full batch: every step is recorded, for free
    for at, row in zip(g_steps[:-1], rows[:-1]):  # the rows after an analysis use its top pair
        pair = row["pairs"][0]
        a, b = ([position[i] for i in pair[s]] for s in ("a", "b"))
        rest = np.setdiff1d(np.arange(len(ids)), a + b)
        for step in (at, at + 1, at + 37):
            expected = [losses[step - 1, a].mean(), losses[step - 1, b].mean(), losses[step - 1, rest].mean()]
            np.testing.assert_allclose(top[step - 1], expected, rtol=1e-4)
    first = int(g_steps[0])
    np.testing.assert_allclose(top[:first - 1, 2], loss[:first - 1], rtol=1e-5)  # no pair yet: the probe is all


# ---------------------------------------------------------------------------------------------
# Spikes and findings
# ---------------------------------------------------------------------------------------------
def test_each_loss_spike_is_attributed_to_the_pair_with_the_sharpness_there(planted):
    """The engine's finding for each spike is its explanation: the pair whose losses moved most
    there (this plugin's evidence) leads it, with λ_max at the nearest measurement."""
    run, *_ = planted
    steps, loss = run.series("train/loss")
    spikes = find_spikes(steps, loss)
    assert len(spikes) >= 1 and [s.step for s in spikes] == list(run.series("train/loss_spike")[0])
    found = {f.step: f for f in spike_findings(run)}
    group_of = groups_of(run)
    events = {e["step"]: e["message"] for e in run.events() if e["kind"] == "loss_spike"}
    assert sorted(events) == [s.step for s in spikes]  # written live by the engine, each once it was over
    for spike in spikes:
        f = found[spike.step]
        pair, move = pair_moves(run, spike.step)[0]
        assert f.severity == "warning" and f.value == pytest.approx(spike.ratio, rel=0.005)
        assert f.message.startswith(f"Loss spike at step {spike.step:,} ({spike.ratio:.3g}× the running median): samples ")
        assert pair["feature"] in f.message and "swung in anti-phase" in f.message
        assert ("λ_max" in f.message) == lambda_max_stands_out(run, spike.step)  # as the series say, on any CPU
        named = [int(i) for i in f.message.split("samples ")[1].split(", …")[0].split(", ")]
        assert {group_of[i] for i in named} <= {"a", "b"}, named  # planted members, not the control
        (da, db) = move.change
        assert max(move.at) > 2 * max(move.before)  # one side's loss shot up at the spike
        said = OpposingSignalsPlugin.explain(run, spike.step)[0]
        assert f"({da:+.3g})" in said.text and f"({db:+.3g})" in said.text and said.step == move.step


def lambda_max_stands_out(run, step: int) -> bool:
    """Whether λ_max at the measurement at or before ``step`` was at 90 % of the threshold or more
    (read from the series, not from the plugin's evidence)."""
    steps, lam = run.series("sharpness/lambda_max")
    t_steps, thr = run.series("sharpness/threshold")
    i = int(np.searchsorted(steps, step, side="right")) - 1
    return i >= 0 and float(np.ravel(lam[i])[0]) >= 0.9 * float(np.interp(steps[i], t_steps, thr))


def test_the_explanation_of_the_first_spike_names_the_planted_pair(planted, capsys):
    """`traindx explain RUN` (no step: the first spike) ranks the pair first, then the sharpness."""
    run, *_ = planted
    result = explain(run)
    first = run_spikes(run)[0]
    assert result.step == first["step"] and result.spike == first
    top = result.evidence[0]
    assert top.plugin == "opposing_signals" and top.weight >= 0.5
    assert "sharpness" in {e.plugin for e in result.evidence}
    if lambda_max_stands_out(run, result.step):  # the chaotic edge-of-stability path differs between CPUs
        assert result.summary.index("anti-phase") < result.summary.index("λ_max")  # ranked as weighed
    assert main(["explain", str(run.path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["summary"] == result.summary and printed["evidence"][0]["plugin"] == "opposing_signals"


def test_findings_are_sentences_with_numbers_and_units(planted):
    run, *_ = planted
    found = OpposingSignalsPlugin.findings(run)
    kinds = {f.message.split(" ")[0] for f in found}
    assert {"Opposing", "The", "At"} <= kinds
    for f in found:
        assert f.message.endswith(".") and f.value is not None
        assert_reads_as_stated(f)
    pair = next(f for f in found if f.message.startswith("Opposing signals"))
    _, row = run.row_at("opposing_signals/groups")
    grad_cos = row["pairs"][0]["grad_cos"]
    assert f"{round(grad_cos, 2):g} cosine" in pair.message and pair.value == round(grad_cos, 2)


@pytest.mark.parametrize("seed", range(5))
def test_nothing_planted_nothing_paired(tmp_path, seed):
    cfg = example(steps=700, sharpness=False, group_share=0.0, seed=seed)
    cfg["run"]["seed"] = seed
    run = train(tmp_path / "run.h5", cfg)
    steps, rows = run.series("opposing_signals/groups")
    assert list(steps) == [500, 700] and not any(r["pairs"] for r in rows)
    assert any(r["unpaired"] for r in rows)  # the edge of stability still makes unstable groups
    (f,) = [f for f in OpposingSignalsPlugin.findings(run) if "No paired" in f.message]
    assert f.severity == "ok" and f.step == 700 and f.value == 2 and f.unit == "analyses"


# ---------------------------------------------------------------------------------------------
# Views, cadence, checkpoints, settings
# ---------------------------------------------------------------------------------------------
def test_views_draw_declared_series_and_thumbnails_show_the_shared_patch(planted):
    run, *_ = planted
    views = run.views()["opposing_signals"]
    assert {v["kind"] for v in views} == {"line", "curve", "table", "image_grid"}
    names = set(run.names())
    assert all(s in names for v in views for s in v["series"]) and all(v["help"] for v in views)
    _, table = run.row_at("opposing_signals/table")
    assert table["columns"][0] == "group" and table["rows"][0][0] == "pair 1 A"
    _, thumbs = run.row_at("opposing_signals/thumbnails")
    assert thumbs.shape == (16, 8, 8)
    corner, elsewhere = thumbs[:, :2, :2], thumbs[:, 2:, 2:]
    assert np.all(corner == thumbs.max()) and elsewhere.mean() < 0.5 * thumbs.max()  # the patch both share


def test_mini_batch_training_records_bursts_before_each_analysis(tmp_path):
    cfg = example(steps=130, sharpness=False, batch_size=64)
    cfg["plugins"]["opposing_signals"] = {"every": 50, "burst": 4, "probe_size": 300}
    run = train(tmp_path / "run.h5", cfg)
    steps, _ = run.series("opposing_signals/top_pair_loss")
    np.testing.assert_array_equal(steps, [47, 48, 49, 50, 97, 98, 99, 100, 127, 128, 129, 130])
    g_steps, rows = run.series("opposing_signals/groups")
    np.testing.assert_array_equal(g_steps, [50, 100, 130])
    assert [len(r["steps"]) for r in rows] == [4, 8, 12]


def test_a_run_resumed_between_the_two_gradient_steps_analyses_as_if_never_stopped(tmp_path):
    cfg = example(steps=300, sharpness=False)
    cfg["run"].update(checkpoint_every=199, keep_checkpoints=0)  # one checkpoint at step 199
    cfg["plugins"]["opposing_signals"]["every"] = 100  # whose analysis at 200 averages 199 and 200
    full, part = tmp_path / "full.h5", tmp_path / "part.h5"
    train(full, cfg)
    shutil.copy(full, part)
    shutil.copytree(checkpoint_dir(full), checkpoint_dir(part))
    (checkpoint_dir(part) / "step_00000300.pt").unlink()
    state = torch.load(checkpoint_dir(part) / "step_00000199.pt", weights_only=True)
    assert state["plugins"]["opposing_signals"]["last_step"] == 199
    assert run_training(cfg, part, resume=True) == "finished"  # from step 199, into the same file
    full, resumed = open_run(full), open_run(part)
    for name in ("opposing_signals/top_pair_loss", "opposing_signals/counts"):
        s1, v1 = full.series(name)
        s2, v2 = resumed.series(name)
        assert np.array_equal(s1, s2) and np.array_equal(v1, v2, equal_nan=True), name
    assert full.series("opposing_signals/groups")[1] == resumed.series("opposing_signals/groups")[1]
    assert [e["kind"] for e in resumed.events()].count("resumed") == 1


@pytest.mark.parametrize("key, value, expected", [
    ("gradient_cosine", 0.5, "in [-1.0, 0.0]"), ("burst", 1, "≥ 2"), ("feature_share", "most", "a number")])
def test_a_wrong_setting_names_the_key_the_value_and_what_was_expected(key, value, expected):
    pattern = rf"plugins\.opposing_signals\.{key}: got .*expected .*{re.escape(expected)}"
    with pytest.raises(ConfigError, match=pattern):
        validate_plugin_table("opposing_signals", {key: value})


def test_a_wrong_data_option_names_the_key_too():
    cfg = copy.deepcopy(example())
    cfg["data"]["group_share"] = 0.2
    with pytest.raises(ConfigError, match=r"data\.group_share: got 0\.2, expected a number in \[0\.0, 0\.05\]"):
        RunConfig.from_dict(cfg)
