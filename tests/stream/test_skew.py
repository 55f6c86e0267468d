"""The partition check (stream.engine.skew): alike partitions stay quiet, a topic keyed by
a feature warns once on that feature and on the columns correlated with it.

Statistical tests run several seeds and count: the false-warning rate on randomly keyed
data stays within a band of the configured rate (a high rate, so that the band can be
checked), none at the default rate; keyed data warns within a bounded number of events.
The pipeline tests check the hook, the log (once per episode) and the metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from detectors.column import ColumnMonitor
from detectors.model import ModelBaseline, ModelMonitor
from stream.config import PartitionCheckConfig, parse_config
from stream.engine.baselines import column_specs, detection_settings
from stream.engine.pipeline import Pipeline
from stream.engine.skew import CLEAR_CHECKS, PartitionSkew
from stream.sinks.metrics import make_registry
from tests.support.configs import config_errors, minimal_config

COUNTRIES = [f"c{i:02d}" for i in range(12)]
_P = 1.0 / np.arange(1, 13) ** 0.8
P_COUNTRY = _P / _P.sum()
PARTITIONS = 4
COLUMNS = {"m": [("country", "feature"), ("income", "feature"), ("x", "feature")]}


def events(rng: np.random.Generator, n: int, drift: bool = False) -> dict[str, np.ndarray]:
    """Clean events: income depends on the country, x on nothing.  ``drift``: every column
    drifts (x by one standard deviation, income by 30 %, the countries reversed)."""
    idx = rng.choice(len(COUNTRIES), n, p=P_COUNTRY[::-1] if drift else P_COUNTRY)
    return {"country": np.array(COUNTRIES, dtype=object)[idx],
            "income": rng.lognormal(10.0 + 0.08 * idx + (0.3 if drift else 0.0), 0.5),
            "x": rng.normal(1.0 if drift else 0.0, 1.0, n), "_idx": idx}


def keyed(cols: dict[str, np.ndarray], rng: np.random.Generator, by_key: bool,
          shares: tuple[float, ...] | None = None) -> np.ndarray:
    """Partition of each event: by its country (a keyed topic) or at random (null keys;
    ``shares`` of the partitions, equal by default)."""
    idx = cols["_idx"]
    return (idx * 7 + 3) % PARTITIONS if by_key else rng.choice(PARTITIONS, idx.size, p=shares)


@pytest.fixture(scope="module")
def profiles_baseline() -> ModelBaseline:
    from detectors.profile import CategoricalProfile, NumericProfile

    ref = events(np.random.default_rng(99), 20_000)
    return ModelBaseline("m", {"country": CategoricalProfile.from_values(ref["country"]),
                               "income": NumericProfile.from_values(ref["income"]),
                               "x": NumericProfile.from_values(ref["x"])})


def monitor(base: ModelBaseline) -> ModelMonitor:
    """A model monitor without alarming detectors: its columns bin the values (what the
    partition check reads) and feed only the non-alarming trackers."""
    return ModelMonitor("m", {name: ColumnMonitor(name, prof, {}, 200, 20)
                              for name, prof in base.profiles.items()})


def feed(skew: PartitionSkew, seed: int, by_key: bool, total: int, batch: int = 500,
         every: int = 2_000, drift_at: int | None = None,
         shares: tuple[float, ...] | None = None) -> dict[str, int]:
    """Feed ``total`` events in batches, partition by partition, checking every ``every``
    events (the clock advances by one interval per check); column -> events fed when it
    first warned.  From ``drift_at`` events on, every column drifts."""
    rng = np.random.default_rng(seed)
    first: dict[str, int] = {}
    fed = 0
    now = 0.0
    mon = monitor(skew.models["m"].baseline)
    while fed < total:
        cols = events(rng, batch, drift=drift_at is not None and fed >= drift_at)
        part = keyed(cols, rng, by_key, shares)
        for p in range(PARTITIONS):
            sel = part == p
            mon.update({k: v[sel] for k, v in cols.items() if k != "_idx"})
            skew.update("m", ("t", p), mon, int(sel.sum()))
        fed += batch
        if fed % every == 0:
            now += skew.cfg.interval_s
            skew.maybe_check(now)
            for col, fig in skew.figures().get("m", _NONE).columns.items():
                if fig.active:
                    first.setdefault(col, fed)
    return first


class _None:
    columns: dict[str, Any] = {}


_NONE = _None()


def test_random_keys_warn_at_about_the_configured_rate(profiles_baseline: ModelBaseline,
                                                       caplog: pytest.LogCaptureFixture,
                                                       ) -> None:
    # one check per seed at a false-alarm rate of 5 % per check (model-wide)
    cfg = PartitionCheckConfig(window=2_000, min_events=400, false_alarm=0.05)
    warned = 0
    seeds = 300
    with caplog.at_level(logging.WARNING, logger="streamdrift.skew"):
        for seed in range(seeds):
            skew = PartitionSkew(cfg, {"m": profiles_baseline}, COLUMNS)
            warned += bool(feed(skew, seed, by_key=False, total=8_000, every=8_000))
    # expected at most 15 (Bonferroni over 3 columns: 14.6 for independent columns); the
    # band is about ±3 standard deviations, so a test that never rejects fails too
    assert 4 <= warned <= 27, warned
    assert len(caplog.records) == warned


def test_random_keys_never_warn_at_the_default_rate(profiles_baseline: ModelBaseline) -> None:
    cfg = PartitionCheckConfig(window=4_000, min_events=1_000)
    for seed in range(20):
        skew = PartitionSkew(cfg, {"m": profiles_baseline}, COLUMNS)
        assert feed(skew, 1_000 + seed, by_key=False, total=40_000) == {}
        assert skew.figures()["m"].checks >= 17  # every 2,000 events from 4,000-6,000 on


@pytest.mark.parametrize("seed", range(4))
def test_a_drift_of_the_whole_stream_is_no_skew(profiles_baseline: ModelBaseline,
                                                seed: int) -> None:
    # every partition drifts at once: while the windows fill with drifted events they mix
    # old and new alike, and the check stays quiet (the drift detectors' business). The
    # partitions get unequal shares: windows of each partition's last N events would span
    # different stretches of the stream and differ for the whole transition
    skew = PartitionSkew(PartitionCheckConfig(), {"m": profiles_baseline}, COLUMNS)
    assert feed(skew, 2_000 + seed, by_key=False, total=80_000, every=1_000,
                drift_at=30_000, shares=(0.4, 0.3, 0.2, 0.1)) == {}
    assert skew.figures()["m"].checks >= 70


@pytest.mark.parametrize("seed", range(5))
def test_a_topic_keyed_by_country_warns_on_country_and_income(
        profiles_baseline: ModelBaseline, seed: int) -> None:
    cfg = PartitionCheckConfig()  # the defaults: min_events 1000 of window 10,000
    skew = PartitionSkew(cfg, {"m": profiles_baseline}, COLUMNS)
    first = feed(skew, seed, by_key=True, total=40_000)
    # the first check after every partition has 1,000 events (the smallest partition gets
    # ~14 % of the traffic) finds both; x, unrelated to the key, never warns
    assert set(first) == {"country", "income"}
    assert max(first.values()) <= 12_000, first
    cols = skew.figures()["m"].columns
    assert cols["country"].cause == "column_is_key"
    assert cols["income"].cause == "correlated_with_key"
    assert cols["country"].score > 10 and cols["x"].score < 1


def test_one_partition_cannot_be_compared(profiles_baseline: ModelBaseline,
                                          caplog: pytest.LogCaptureFixture) -> None:
    skew = PartitionSkew(PartitionCheckConfig(), {"m": profiles_baseline}, COLUMNS)
    rng = np.random.default_rng(0)
    cols = events(rng, 5_000)
    mon = monitor(profiles_baseline)
    mon.update({k: v for k, v in cols.items() if k != "_idx"})
    skew.update("m", ("t", 0), mon, 5_000)
    with caplog.at_level(logging.INFO, logger="streamdrift.skew"):
        assert skew.maybe_check(0.0)
        assert not skew.maybe_check(1.0)  # the next try is a few seconds later
        for t in range(6, 60, 6):
            assert skew.maybe_check(float(t))
        assert not caplog.records  # other partitions may still come
        for t in range(60, 200, 6):
            skew.maybe_check(float(t))
    fig = skew.figures()["m"]
    assert fig.partitions == 1 and fig.checks == 0 and not fig.columns
    # said once, after interval_s alone: the process cannot compare partitions
    assert [r.getMessage()[:40] for r in caplog.records] == [
        "partition check: this process reads one "]


# -- in the pipeline -------------------------------------------------------------------
CONFIG = {
    "models": [{"name": "m", "baseline": {"reference": "ref.jsonl"},
                "features": [{"name": "country", "path": "country", "type": "categorical"},
                             {"name": "income", "path": "income", "type": "numeric"},
                             {"name": "x", "path": "x", "type": "numeric"}]}],
    "detection": {"false_alarm_events": 100_000, "window": 200, "cadence": 20,
                  "partition_check": {"interval_s": 30, "repeat_s": 600, "window": 4_000,
                                      "min_events": 1_000}},
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def pipeline_factory(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = parse_config(CONFIG, Path(tmp_path_factory.mktemp("skew")))
    settings = detection_settings(cfg.detection)
    settings = type(settings)(**{**settings.__dict__, "calibration_values": 50_000})
    ref = events(np.random.default_rng(98), 10_000)
    base = ModelBaseline.build("m", {k: v for k, v in ref.items() if k != "_idx"},
                               column_specs(cfg.models[0]), settings)

    def make() -> tuple[Pipeline, Clock]:
        clock = Clock()
        return Pipeline(cfg, {"m": base}, clock=clock), clock
    return make


def messages(cols: dict[str, np.ndarray], sel: np.ndarray) -> list[bytes]:
    return [orjson.dumps({"country": c, "income": float(i), "x": float(x)})
            for c, i, x in zip(cols["country"][sel], cols["income"][sel], cols["x"][sel],
                               strict=True)]


def run(pipe: Pipeline, clock: Clock, by_key: bool, rounds: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        cols = events(rng, 2_000)
        part = keyed(cols, rng, by_key)
        for p in range(PARTITIONS):
            pipe.process(messages(cols, part == p), partition=("events", p))
        clock.now += 10.0


def skew_samples(pipe: Pipeline) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in make_registry(pipe).collect() for s in fam.samples
            if s.name.startswith("streamdrift_partition_skew")}


def test_pipeline_warns_once_per_episode_and_exports_the_cause(
        pipeline_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    pipe, clock = pipeline_factory()
    with caplog.at_level(logging.INFO, logger="streamdrift.skew"):
        run(pipe, clock, by_key=True, rounds=20)  # 200 s: several checks
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted(r.feature for r in warnings) == ["country", "income"]  # type: ignore[attr-defined]
    country = next(r for r in warnings if r.feature == "country")  # type: ignore[attr-defined]
    # the first check that could compare: 3 or 4 partitions (the smallest gets ~17 %)
    assert country.cause == "column_is_key" and len(country.partitions) >= 3  # type: ignore[attr-defined]
    assert "keyed by country" in country.getMessage()
    s = skew_samples(pipe)
    key = (("cause", "column_is_key"), ("feature", "country"), ("model", "m"),
           ("role", "feature"))
    assert s[("streamdrift_partition_skew_active", key)] == 1.0
    assert s[("streamdrift_partition_skew_active",
              (("cause", "correlated_with_key"), *key[1:]))] == 0.0
    assert s[("streamdrift_partition_skew_partitions", (("model", "m"),))] == 4
    assert s[("streamdrift_partition_skew_score",
              (("feature", "x"), ("model", "m"), ("role", "feature")))] < 1
    # the warning comes back after repeat_s (600 s), not before
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamdrift.skew"):
        run(pipe, clock, by_key=True, rounds=50, seed=1)
    assert len(caplog.records) == 2  # country and income once more, 600 s after the first
    # null keys from now on: the episode closes after a window and CLEAR_CHECKS checks
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="streamdrift.skew"):
        run(pipe, clock, by_key=False, rounds=10 + 4 * CLEAR_CHECKS, seed=2)
    closed = [r for r in caplog.records if "closed" in r.getMessage()]
    assert sorted(r.feature for r in closed) == ["country", "income"]  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert skew_samples(pipe)[("streamdrift_partition_skew_active", key)] == 0.0


def test_pipeline_with_null_keys_stays_quiet(pipeline_factory: Any,
                                             caplog: pytest.LogCaptureFixture) -> None:
    pipe, clock = pipeline_factory()
    with caplog.at_level(logging.WARNING, logger="streamdrift.skew"):
        run(pipe, clock, by_key=False, rounds=20, seed=3)
    assert not caplog.records
    s = skew_samples(pipe)
    assert s[("streamdrift_partition_skew_checks_total", (("model", "m"),))] >= 5
    assert not any(v for (name, _), v in s.items()
                   if name == "streamdrift_partition_skew_active")


def test_replay_and_dropped_partitions_keep_no_skew_state(pipeline_factory: Any) -> None:
    pipe, clock = pipeline_factory()
    rng = np.random.default_rng(4)
    cols = events(rng, 3_000)
    pipe.process(messages(cols, np.ones(3_000, dtype=bool)))  # replay: no partition
    assert pipe.skew is not None and not pipe.skew.models["m"].windows
    assert skew_samples(pipe) == {}
    pipe.process(messages(cols, np.ones(3_000, dtype=bool)), partition=("events", 0))
    assert ("events", 0) in pipe.skew.models["m"].windows
    pipe.drop_partition(("events", 0))
    assert not pipe.skew.models["m"].windows


def test_disabled_check_keeps_nothing(tmp_path: Path) -> None:
    cfg = parse_config({**CONFIG, "detection": {"partition_check": {"enabled": False}}},
                       tmp_path)
    assert not cfg.detection.partition_check.enabled


# -- configuration ---------------------------------------------------------------------
def test_defaults() -> None:
    cfg = parse_config(minimal_config(), Path("/cfg"))
    pc = cfg.detection.partition_check
    assert (pc.enabled, pc.interval_s, pc.window, pc.min_events, pc.false_alarm,
            pc.min_effect, pc.repeat_s) == (True, 60.0, 10_000, 1_000, 1e-6, 0.05, 3600.0)


@pytest.mark.parametrize(("section", "message"), [
    ({"enabled": "yes"}, "detection.partition_check.enabled: must be true or false"),
    ({"interval_s": 0}, "detection.partition_check.interval_s: must be a number > 0"),
    ({"false_alarm": 0.5}, "detection.partition_check.false_alarm: must be below 0.1"),
    ({"min_effect": 1.5}, "detection.partition_check.min_effect: must be below 1"),
    ({"window": 1000, "min_events": 950},
     "detection.partition_check.min_events: must be at most 90 % of window (900"),
    ({"windw": 10}, "detection.partition_check.windw: unknown key (did you mean 'window'?)"),
    ([1], "detection.partition_check: must be a mapping with keys enabled, interval_s"),
])
def test_bad_settings_name_the_key_and_the_fix(section: Any, message: str) -> None:
    errors = config_errors(minimal_config(detection={"partition_check": section}))
    assert any(e.startswith(message) for e in errors), errors


def test_an_idle_stream_is_still_checked(pipeline_factory: Any) -> None:
    pipe, clock = pipeline_factory()
    rng = np.random.default_rng(5)
    cols = events(rng, 8_000)
    part = keyed(cols, rng, by_key=False)
    for p in range(PARTITIONS):  # the whole topic read at once, then nothing new
        pipe.process(messages(cols, part == p), partition=("events", p))
    assert pipe.skew is not None and pipe.skew.models["m"].checks == 0
    clock.now += 30.0
    pipe.heartbeat()  # an empty poll
    assert pipe.skew.models["m"].checks == 1
