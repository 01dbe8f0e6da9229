"""The error_slices plugin and the synthetic-slices source: declarations, one evaluation from a
fake context, findings on a planted run file, and real training runs on the planted source (every
planted slice found, in the run file, with the engine's validation ids) and on its null variant."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import assert_reads_as_stated
from engine.config import RunConfig
from engine.errors import ConfigError
from engine.plugin import Finding, View
from engine.sources import slices as source
from plugins.error_slices.plugin import ErrorSlicesPlugin, changes_at, tracked_errors
from plugins.error_slices.synthetic import planted_evaluation

SETTINGS = {s.name: s.default for s in ErrorSlicesPlugin.settings}


def make_plugin(**changes) -> ErrorSlicesPlugin:
    return ErrorSlicesPlugin({**SETTINGS, **changes}, every=None, on="eval")


def run_context(n_val: int, meta: dict, input_shape=(1, 8, 8)):
    return SimpleNamespace(val_size=n_val, input_shape=input_shape, val_metadata=meta,
                           config=SimpleNamespace(sections={"run": {"seed": 0}}))


def planted_context(plugin: ErrorSlicesPlugin, logged: dict, step: int = 100, seed: int = 0):
    d = planted_evaluation(3000, seed)
    logits = torch.from_numpy(np.log(d["probs"])).float()
    ctx = SimpleNamespace(step=step, logits=logits, labels=torch.from_numpy(d["labels"]),
                          embeddings=torch.from_numpy(d["embeddings"]), ids=5000 + np.arange(3000),
                          metadata=d["meta"], class_names=[str(c) for c in range(10)],
                          log=lambda name, value: logged.setdefault(name, []).append(value),
                          event=lambda kind, message: logged.setdefault("events", []).append(kind))
    return ctx, d


class FakeRun:
    """The part of engine.open_run's reader that findings use."""

    def __init__(self, steps, rows):
        self.steps, self.rows = np.asarray(steps), rows

    def names(self):
        return ["error_slices/slices"]

    def length(self, name):
        return len(self.steps)

    def series(self, name):
        return self.steps, self.rows


# ---------------------------------------------------------------------------------------------
# Declarations and one evaluation
# ---------------------------------------------------------------------------------------------
def test_declares_what_it_logs_and_views_only_declared_series():
    plugin = make_plugin()
    declared = {s.name: s for s in plugin.series(run_context(3000, {"site": np.zeros(3000)}))}
    assert {"slices", "table", "accuracy", "scatter", "metadata", "thumbnails", "n_slices", "worst_error",
            "worst_lift"} == set(declared)
    assert declared["scatter"].shape == (300, 3) and declared["thumbnails"].shape == (30, 8, 8)
    assert declared["slices"].dtype == "json" and declared["accuracy"].shape == (SETTINGS["lines"] + 1,)
    views = plugin.views()
    assert {v.kind for v in views} == {"table", "line", "scatter", "image_grid"}
    for v in views:
        assert isinstance(v, View) and v.help
        assert all(name.split("/", 1)[1] in declared for name in v.series)
    bare = make_plugin()
    assert {s.name for s in bare.series(run_context(300, {}, input_shape=(20,)))}.isdisjoint({"metadata", "thumbnails"})
    assert {v.kind for v in bare.views()} == {"table", "line", "scatter"}


def test_on_eval_logs_the_slices_with_the_engines_ids():
    plugin = make_plugin()
    plugin.series(run_context(3000, {"site": 0}, input_shape=(32,)))
    plugin.setup(run_context(3000, {}, input_shape=(32,)))
    logged = {}
    ctx, d = planted_context(plugin, logged)
    plugin.on_eval(ctx)
    assert logged == {}  # the search runs in the worker: the evaluation's hook does not wait for it
    plugin.close()  # ... and what it found is logged, at the evaluation's step, once it is done
    row = json.loads(json.dumps(logged["slices"][0]))  # plain JSON, as the run file stores it
    assert len(row["slices"]) == 3 and row["examined"] > 100
    for s in row["slices"]:
        assert {"ids", "description", "error_rate", "size", "p_value", "track", "line", "ci", "lift"} <= set(s)
        assert min(s["ids"]) >= 5000 and len(s["ids"]) == s["size"]
    truth = {name: set((5000 + np.flatnonzero(mask)).tolist()) for name, mask in d["truth"].items()}
    for name, ids in truth.items():
        best = max(row["slices"], key=lambda s: len(ids & set(s["ids"])))
        assert len(ids & set(best["ids"])) / len(best["ids"]) >= 0.9
    assert sorted(s["track"] for s in row["slices"]) == [1, 2, 3]
    assert tracked_errors(row) == {s["track"]: pytest.approx(s["error_rate"]) for s in row["slices"]}
    table = logged["table"][0]
    assert len(table["rows"]) == 3 and all(len(r) == len(table["columns"]) for r in table["rows"])
    accuracy = logged["accuracy"][0]
    assert np.all(accuracy[:3] < 0.2) and accuracy[-1] > 0.9 and np.isnan(accuracy[3])
    scatter = logged["scatter"][0]
    assert scatter.shape == (300, 3) and set(np.unique(scatter[:, 2])) == {0, 1, 2, 3}
    assert logged["metadata"][0]["rows"][0][0] == "site = 3"  # the worst value of any column
    assert logged["n_slices"] == [3] and logged["worst_lift"][0] > 5


def test_slices_keep_their_numbers_at_the_next_evaluation_and_after_a_checkpoint(tmp_path):
    plugin = make_plugin()
    plugin.series(run_context(3000, {}, input_shape=(32,)))
    plugin.setup(run_context(3000, {}, input_shape=(32,)))
    logged = {}
    plugin.on_eval(planted_context(plugin, logged, step=100)[0])
    torch.save(plugin.state_dict(), tmp_path / "state.pt")
    resumed = make_plugin()
    resumed.series(run_context(3000, {}, input_shape=(32,)))
    resumed.setup(run_context(3000, {}, input_shape=(32,)))
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    again = {}
    resumed.on_eval(planted_context(resumed, again, step=200)[0])
    resumed.close()
    first = {s["description"]: (s["track"], s["line"]) for s in logged["slices"][0]["slices"]}
    second = {s["description"]: (s["track"], s["line"]) for s in again["slices"][0]["slices"]}
    assert first == second


def test_non_finite_logits_are_skipped_with_an_event():
    plugin = make_plugin()
    plugin.series(run_context(3000, {}, input_shape=(32,)))
    plugin.setup(run_context(3000, {}, input_shape=(32,)))
    logged = {}
    ctx, _ = planted_context(plugin, logged)
    ctx.logits[0, 0] = float("nan")
    plugin.on_eval(ctx)
    plugin.close()
    assert logged == {"events": ["error_slices_skipped"]}


def test_a_worker_that_died_is_reported_not_waited_for():
    plugin = make_plugin()
    plugin.series(run_context(3000, {}, input_shape=(32,)))
    plugin.setup(run_context(3000, {}, input_shape=(32,)))
    plugin.worker._process.kill()
    plugin.on_eval(planted_context(plugin, {})[0])
    with pytest.raises(RuntimeError, match="search failed: its process ended"):
        plugin.close()  # the engine disables the plugin with a plugin_error event


# ---------------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------------
def slice_row(error: float, track: int = 1, description: str = "site = 4 and device = 1") -> dict:
    return {"description": description, "error_rate": error, "size": 40, "rest_error_rate": 0.05,
            "overall_error_rate": 0.07, "lift": error / 0.07, "p_value": 1e-20, "track": track}


def test_findings_say_the_worst_slice_and_how_its_error_changed():
    rows = [{"slices": [slice_row(0.4)], "tracked": [{"track": 1, "description": "site = 4 and device = 1",
                                                      "error_rate": 0.4, "size": 40}], "examined": 300},
            {"slices": [slice_row(0.9)], "tracked": [{"track": 1, "description": "site = 4 and device = 1",
                                                      "error_rate": 0.9, "size": 40}], "examined": 300}]
    worst, change = ErrorSlicesPlugin.findings(FakeRun([100, 200], rows))
    assert isinstance(worst, Finding) and worst.severity == "problem" and worst.step == 200
    assert worst.message.startswith("At step 200 the worst error slice is “site = 4 and device = 1”: 90% error")
    assert worst.value == pytest.approx(90) and worst.unit == "%"
    assert change.message == ("The error of slice “site = 4 and device = 1” rose from 40% at step 100 to 90% "
                              "at step 200 (+50 points), on the same validation samples.")
    assert change.value == pytest.approx(50) and change.unit == "points"
    for finding in (worst, change):
        assert_reads_as_stated(finding)


def test_changes_at_the_evaluation_nearest_a_step():
    tracked = [[(1, 0.4)], [(1, 0.9), (2, 0.3)], [(1, 0.85), (2, 0.7)]]
    rows = [{"slices": [], "examined": 1, "tracked": [{"track": t, "description": "", "error_rate": e, "size": 9}
                                                      for t, e in row]} for row in tracked]
    run = FakeRun([100, 200, 300], rows)
    step, changes = changes_at(run, 290)
    assert step == 300 and [(c.track, round(c.change, 2)) for c in changes] == [(2, 0.4), (1, -0.05)]
    assert changes_at(run, 120) == (100, [])  # the first evaluation has none before it


def test_findings_without_a_slice_say_so():
    rows = [{"slices": [], "tracked": [], "examined": 812}]
    (only,) = ErrorSlicesPlugin.findings(FakeRun([500], rows))
    assert only.severity == "ok" and "812 candidates" in only.message and only.message[0].isupper()
    assert ErrorSlicesPlugin.findings(SimpleNamespace(names=lambda: [])) == []


# ---------------------------------------------------------------------------------------------
# The synthetic-slices source
# ---------------------------------------------------------------------------------------------
def test_source_options_are_validated_like_any_key():
    cfg = RunConfig.from_dict({"data": {"source": "synthetic-slices", "rare_share": 0.05, "planted": False}})
    assert cfg.sections["data"]["rare_share"] == 0.05 and cfg.sections["data"]["n_val"] == 2000
    with pytest.raises(ConfigError, match=r"data.rare_share: got 0.5, expected a number in \[0.0, 0.2\]"):
        RunConfig.from_dict({"data": {"source": "synthetic-slices", "rare_share": 0.5}})
    with pytest.raises(ConfigError, match="data.plantd: unknown key.*did you mean 'planted'"):
        RunConfig.from_dict({"data": {"source": "synthetic-slices", "plantd": True}})


def test_source_plants_its_slices_only_where_asked_and_repeats_itself():
    options = {"n_train": 500, "n_val": 3000, "seed": 3}
    a, b = source.load(options), source.load(options)
    np.testing.assert_array_equal(a["x_val"], b["x_val"])
    masks = source.planted_masks(options)
    meta = a["meta_val"]
    rare_cell = (meta["site"] == source.RARE_SITE) & (meta["device"] == source.RARE_DEVICE)
    np.testing.assert_array_equal(masks["rare"], rare_cell)  # the cell holds the rare slice alone
    assert 0.01 < masks["rare"].mean() < 0.03 and 0.02 < masks["noise"].mean() < 0.08
    stamped_classes = np.unique((a["y_val"][masks["stamped"] & ~masks["noise"]]))
    assert stamped_classes.tolist() == [source.STAMPED_CLASS]
    assert (a["x_val"][masks["stamped"], 0, :2, :2] == 1.5).all()
    null = source.planted_masks({**options, "planted": False})
    assert not null["rare"].any() and not null["stamped"].any() and null["noise"].any()


# ---------------------------------------------------------------------------------------------
# Real runs
# ---------------------------------------------------------------------------------------------
def test_a_run_that_diverges_keeps_the_slices_of_every_evaluation_before(tmp_path):
    """The search runs in a worker; the run closing, however it ends, logs what it still had."""
    from conftest import tiny_config
    from engine import open_run, run_training
    out = tmp_path / "d.h5"
    cfg = tiny_config(run={"steps": 200, "eval_every": 2}, optimizer={"lr": 50.0}, loss={"name": "mse"},
                      plugins={"error_slices": {}})
    assert run_training(cfg, out) == "diverged"
    with open_run(out) as run:
        evaluations = run.series("val/loss")[0]
        assert len(evaluations) >= 1
        assert list(run.series("error_slices/slices")[0]) == list(evaluations)


def train(tmp_path, seed: int, planted: bool):
    from engine import open_run, run_training
    data = {"source": "synthetic-slices", "seed": seed, "planted": planted}
    cfg = {"run": {"seed": seed, "steps": 300, "eval_every": 150, "threads": 1}, "data": data,
           "model": {"name": "mlp", "hidden": [64, 64]},
           "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
           "plugins": {"error_slices": {"on": "eval"}}}
    path = tmp_path / f"run-{seed}-{planted}.h5"
    assert run_training(cfg, path) == "finished"
    return open_run(path), data


def test_real_runs_recover_every_planted_slice(tmp_path):
    scores = {"rare": [], "stamped": []}
    for seed in range(5):
        run, data = train(tmp_path, seed, planted=True)
        assert not [e for e in run.events() if e["kind"] == "plugin_error"]
        steps, rows = run.series("error_slices/slices")
        assert list(steps) == [150, 300]
        ids, masks = run.data("val/ids"), source.planted_masks(data)
        assert ids.min() >= 8000  # validation ids as the engine gives them: after the training rows
        for name in scores:
            truth = set(ids[masks[name]].tolist())
            found = max((set(s["ids"]) for s in rows[-1]["slices"]), key=lambda f: len(f & truth) / len(f | truth))
            scores[name].append((len(found & truth) / len(found), len(found & truth) / len(truth)))
    for name, values in scores.items():
        precision, recall = np.array(values).T
        assert precision.min() >= 0.9 and recall.min() >= 0.8, (name, values)
        assert precision.std() <= 0.05 and recall.std() <= 0.05, (name, values)
    words = [s["description"] for s in rows[-1]["slices"]]
    assert "site = 4 and device = 1" in words and "true 2, predicted 3" in words
    _, thumbs = run.series("error_slices/thumbnails")
    assert thumbs.shape == (2, 30, 8, 8) and np.isfinite(thumbs[-1, :6]).all()
    findings = ErrorSlicesPlugin.findings(run)
    assert findings[0].severity == "problem" and "worst error slice" in findings[0].message


def test_real_runs_with_nothing_planted_report_nothing(tmp_path):
    """A regression guard; the rate itself is measured on 40 seeds in benches/error_slices.py and on
    40 planted-free evaluations in test_error_slices_analysis.py."""
    for seed in range(10, 13):
        run, _ = train(tmp_path, seed, planted=False)
        _, rows = run.series("error_slices/slices")
        assert rows[-1]["slices"] == [], (seed, [s["summary"] for s in rows[-1]["slices"]])


def test_views_render_and_the_report_shows_slices_and_metadata(tmp_path, qapp):
    from gui.report_model import gather
    from gui.views import render_view_image
    run, _ = train(tmp_path, 0, planted=True)
    views = run.views()["error_slices"]
    assert [v["title"] for v in views] == ["Error slices", "Slice vs rest accuracy", "Embedding by slice",
                                           "Error by metadata value", "Slice members"]
    for v in views:
        assert render_view_image(v, run, width=400, height=250).startswith(b"\x89PNG"), v["title"]
    section = next(s for s in gather(run).sections if s.plugin == "error_slices")
    tables = {p.view["title"]: p.table for p in section.plots if p.table}
    assert {r[1] for r in tables["Error slices"]["rows"]} >= {"site = 4 and device = 1", "true 2, predicted 3"}
    metadata = tables["Error by metadata value"]
    assert metadata["columns"] == ["value", "samples", "error", "lift"]
    for column in ("site", "device", "operator", "exposure"):
        assert any(column in r[0] for r in metadata["rows"]), column
    assert metadata["rows"][0][0] in ("site = 4", "device = 1")  # the planted conjunction's values fail most
    assert section.findings[0].severity == "problem" and "worst error slice" in section.findings[0].message


@pytest.mark.parametrize("given", [True, False])
def test_thumbnails_are_the_members_inputs_the_loop_gives(given):
    """The inputs come from the run context (the engine's validation split, or a watch loop's
    val_data): each slice's row of the mosaic shows its representative members; no inputs, none."""
    plugin = make_plugin()
    inputs = torch.arange(3000, dtype=torch.float32)[:, None, None, None].expand(3000, 1, 8, 8)
    run = run_context(3000, {})
    run.val_inputs = inputs if given else None
    plugin.series(run)
    plugin.setup(run)
    logged = {}
    plugin.on_eval(planted_context(plugin, logged)[0])
    plugin.close()
    found = logged["slices"][0]["slices"]
    assert len(found) == 3
    if not given:
        assert "thumbnails" not in logged
        return
    mosaic = logged["thumbnails"][0]
    from plugins.error_slices.plugin import THUMB_MEMBERS
    for k, s in enumerate(found):
        shown = mosaic[k * THUMB_MEMBERS:(k + 1) * THUMB_MEMBERS, 0, 0]
        rows = [i - 5000 for i in s["representatives"][:THUMB_MEMBERS]]  # ids are 5000 + row
        assert list(shown[:len(rows)]) == [float(r) for r in rows]
