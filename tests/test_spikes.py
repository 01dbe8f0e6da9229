"""engine/spikes.py on scripted loss series: planted spikes are found where they are and as large
as they are; smooth decays and noisy plateaus give none; the whole-series and the step-by-step
forms agree."""
import numpy as np
import pytest

from engine.spikes import SpikeDetector, SpikeRule, find_spikes


def decay(n=2000, start=2.0, floor=0.05, rate=3e-3):
    return floor + (start - floor) * np.exp(-rate * np.arange(n))


def incremental(steps, losses, rule=SpikeRule()):
    detector, out = SpikeDetector(rule), []
    for s, v in zip(steps, losses):
        if (spike := detector.update(int(s), float(v))) is not None:
            out.append(spike)
    return out + ([last] if (last := detector.finish()) is not None else [])


def test_a_planted_spike_is_found_at_its_step_with_its_size():
    steps = np.arange(1, 2001)
    loss = decay() * (1 + 0.01 * np.random.default_rng(0).normal(size=2000))
    median_before = np.median(loss[1100 - 50:1100])
    loss[1100:1103] = median_before * np.array([1.8, 2.5, 1.4])  # the peak is the second step
    spikes = find_spikes(steps, loss)
    assert [s.step for s in spikes] == [1102]
    assert spikes[0].ratio == pytest.approx(2.5, rel=0.01)
    assert spikes[0].median == pytest.approx(median_before, rel=0.01)
    assert spikes[0].z > 6


def test_smooth_decay_and_noisy_plateau_give_none():
    steps = np.arange(1, 5001)
    assert find_spikes(steps[:2000], decay()) == []
    rng = np.random.default_rng(1)
    assert find_spikes(steps, 1.0 + 0.05 * rng.normal(size=5000)) == []  # 5% noise, Gaussian
    assert find_spikes(steps, rng.uniform(0.8, 1.2, size=5000)) == []  # ±20%, uniform
    minibatch = decay(5000) * rng.lognormal(0, 0.03, size=5000)  # a mini-batch curve: noise on a decay
    assert find_spikes(steps, minibatch) == []


@pytest.fixture(scope="module")
def healthy_minibatch_run(tmp_path_factory):
    """The default digits run without its analyses: SGD with momentum, batches of 64, a cosine
    schedule; its loss falls smoothly to ~0.003, where a batch holding one still-wrong sample has
    5–12× the median loss: ordinary noise, not a spike."""
    import tomllib
    from conftest import ROOT
    from engine import open_run, run_training
    cfg = tomllib.loads((ROOT / "assets/examples/digits-mlp.toml").read_text())
    cfg.pop("plugins")
    cfg["run"]["threads"] = 1
    path = tmp_path_factory.mktemp("healthy") / "run.h5"
    assert run_training(cfg, path) == "finished"
    with open_run(path) as run:
        steps, loss = run.series("train/loss")
        assert run.length("train/loss_spike") == 0  # the engine's live detector agrees
    return np.asarray(steps), np.asarray(loss, dtype=np.float64)


def test_heavy_tailed_minibatch_noise_is_no_spike_but_a_catapult_on_it_is(healthy_minibatch_run):
    steps, loss = healthy_minibatch_run
    late = loss[len(loss) // 2:]
    assert np.max(late / np.median(late)) > 5  # single batches far above the median: ordinary here
    assert find_spikes(steps, loss) == []
    planted = loss.copy()
    median_before = np.median(planted[1000 - 50:1000])
    planted[1000:1006] = median_before * np.array([30, 80, 200, 120, 60, 25])  # the model's loss, not a batch's
    assert [s.step for s in find_spikes(steps, planted)] == [steps[1002]]


def test_a_window_of_non_positive_losses_has_no_spikes():
    loss = -1.0 + 0.01 * np.random.default_rng(4).normal(size=500)  # e.g. a negative log-density
    loss[300] = 0.5
    assert find_spikes(np.arange(1, 501), loss) == []


def test_a_smooth_curve_needs_a_real_rise_not_only_many_mads():
    # A wiggle of 5% is thousands of MADs tall on a nearly flat curve, yet below min_ratio (1.1).
    loss = 1.0 + 1e-6 * np.random.default_rng(3).normal(size=2000)
    loss[1500] *= 1.05
    assert find_spikes(np.arange(1, 2001), loss) == []
    assert [s.step for s in find_spikes(np.arange(1, 2001), loss, SpikeRule(min_ratio=1.02))] == [1501]


def test_spikes_closer_than_min_gap_are_one_and_further_apart_are_two():
    loss = np.ones(400) + 0.01 * np.random.default_rng(2).normal(size=400)
    loss[[100, 110, 200]] = [2.0, 3.0, 2.0]
    steps = np.arange(1, 401)
    assert [(s.step, round(s.ratio, 1)) for s in find_spikes(steps, loss)] == [(111, 3.0), (201, 2.0)]
    assert [s.step for s in find_spikes(steps, loss, SpikeRule(min_gap=5))] == [101, 111, 201]


def test_non_finite_losses_are_skipped_and_early_steps_have_no_baseline():
    loss = np.ones(300)
    loss[[5, 150]] = [10.0, np.nan]
    loss[200] = 4.0
    spikes = find_spikes(np.arange(1, 301), loss)
    assert [s.step for s in spikes] == [201]  # step 6 has fewer than `window` losses before it
    assert spikes[0].z == float("inf")  # a flat window has no spread: any real rise is a spike


@pytest.mark.parametrize("seed", range(4))
def test_incremental_and_whole_series_forms_agree(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    loss = decay(n) * rng.lognormal(0, 0.05, size=n)
    at = rng.choice(np.arange(100, n), 8, replace=False)
    loss[at] *= rng.uniform(1.2, 4.0, size=8)
    steps = np.arange(1, n + 1) * 2  # steps need not be 1, 2, 3, ...
    rule = SpikeRule(window=40, threshold=5.0, min_gap=15)
    whole = find_spikes(steps, loss, rule)
    assert whole == incremental(steps, loss, rule)
    assert len(whole) >= 4


def test_chunked_windows_match_a_single_chunk(monkeypatch):
    import engine.spikes as spikes
    rng = np.random.default_rng(5)
    loss = 1 + 0.02 * rng.normal(size=1000)
    loss[rng.choice(1000, 10, replace=False)] += 1.0
    expected = find_spikes(np.arange(1000), loss)
    monkeypatch.setattr(spikes, "CHUNK", 7)
    assert find_spikes(np.arange(1000), loss) == expected


@pytest.mark.parametrize("kwargs, message", [
    ({"window": 2}, "window: got 2"), ({"min_gap": 0}, "min_gap"), ({"threshold": 0.0}, "threshold"),
    ({"min_ratio": -1.0}, "min_ratio")])
def test_a_wrong_rule_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpikeRule(**kwargs)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_fed_in_chunks_the_detector_finds_the_whole_series_spikes(chunk):
    """The engine feeds a flush's worth of steps at a time; any cut gives the same spikes."""
    rng = np.random.default_rng(5)
    n = 2500
    loss = decay(n) * rng.lognormal(0, 0.05, size=n)
    loss[rng.choice(np.arange(100, n), 10, replace=False)] *= 3.0
    steps = np.arange(1, n + 1)
    detector, got = SpikeDetector(), []
    for i in range(0, n, chunk):
        got += detector.update_many(steps[i:i + chunk], loss[i:i + chunk])
    got += [last] if (last := detector.finish()) is not None else []
    assert got == find_spikes(steps, loss) and len(got) >= 5
