"""Baseline profiles: exact statistics, bins under ties, JSON round trip, merging, schema."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from detectors.errors import DetectorError
from detectors.model import ModelBaseline
from detectors.profile import (
    QUANTILE_LEVELS,
    SCHEMA_VERSION,
    CategoricalProfile,
    NumericProfile,
    profile_from_dict,
)
from tests.detectors.conftest import NUMERIC_FAMILIES, draw


def json_round_trip(data):
    return json.loads(json.dumps(data, allow_nan=False))


def assert_valid_bins(prof: NumericProfile) -> None:
    edges, probs = prof.bin_edges, prof.bin_probabilities
    assert probs.size == edges.size + 1
    assert np.all(np.diff(edges) > 0), "bin edges must be strictly increasing"
    assert np.all(np.isfinite(edges)) and np.all(np.isfinite(probs))
    assert np.all(probs > 0), "no empty bin"
    assert math.isclose(probs.sum(), 1.0, abs_tol=1e-12)
    if edges.size:
        assert prof.min <= edges[0] and edges[-1] < prof.max


def data_shares(values: np.ndarray, prof: NumericProfile) -> np.ndarray:
    """Exact share of ``values`` in each bin of ``prof``."""
    idx = prof.bin_index(values)
    return np.bincount(idx, minlength=prof.bin_probabilities.size) / values.size


# -- numeric -----------------------------------------------------------------
class TestNumericStatistics:
    @pytest.mark.parametrize("family", NUMERIC_FAMILIES)
    def test_exact_moments_and_counts(self, rng, family):
        x = draw(family, rng, 7_000)
        dirty = x.copy()
        dirty[rng.choice(x.size, 300, replace=False)] = np.nan
        dirty[rng.choice(x.size, 50, replace=False)] = np.inf
        dirty[rng.choice(x.size, 20, replace=False)] = -np.inf
        finite = dirty[np.isfinite(dirty)]
        prof = NumericProfile.from_values(dirty, bins=16)
        assert prof.count == finite.size
        assert prof.n_missing == int(np.isnan(dirty).sum())
        assert prof.n_invalid == int(np.isinf(dirty).sum())
        assert prof.count + prof.n_missing + prof.n_invalid == dirty.size
        assert prof.missing_rate == pytest.approx(prof.n_missing / (prof.count + prof.n_missing))
        assert prof.mean == pytest.approx(finite.mean(), rel=1e-12, abs=1e-12)
        assert prof.std == pytest.approx(finite.std(ddof=1), rel=1e-10)
        assert prof.min == finite.min() and prof.max == finite.max()

    def test_chunks_equal_one_array(self, rng):
        x = rng.normal(size=9_000)
        whole = NumericProfile.from_values(x)
        chunked = NumericProfile.from_values([x[:1000], x[1000:1001], x[1001:]])
        scalars = NumericProfile.from_values(x[:50].tolist())
        assert chunked.count == whole.count
        assert chunked.mean == pytest.approx(whole.mean, rel=1e-12)
        assert chunked.std == pytest.approx(whole.std, rel=1e-12)
        # everything fits the reservoir: the derived figures are exact, whatever the chunks
        np.testing.assert_array_equal(chunked.bin_edges, whole.bin_edges)
        np.testing.assert_array_equal(chunked.bin_probabilities, whole.bin_probabilities)
        assert scalars.count == 50 and scalars.mean == pytest.approx(x[:50].mean())

    def test_quantiles_are_exact_while_the_reservoir_holds_everything(self, rng):
        x = rng.lognormal(size=8_000)
        prof = NumericProfile.from_values(x, bins=32, reservoir_size=10_000)
        q = prof.quantiles
        assert list(q) == [f"{lvl:g}" for lvl in QUANTILE_LEVELS]
        for lvl in QUANTILE_LEVELS:
            assert q[f"{lvl:g}"] == pytest.approx(np.quantile(x, lvl), rel=1e-12)
        assert list(q.values()) == sorted(q.values())

    def test_continuous_bins_are_equal_frequency(self, rng):
        x = rng.normal(size=6_400)
        prof = NumericProfile.from_values(x, bins=32)
        assert_valid_bins(prof)
        assert prof.bin_probabilities.size == 32
        np.testing.assert_allclose(prof.bin_probabilities, 1 / 32, atol=1e-12)
        # the probabilities are the reference's own shares of the bins
        np.testing.assert_allclose(data_shares(x, prof), prof.bin_probabilities, atol=1e-12)
        # bin k holds edges[k-1] < x <= edges[k]
        e = prof.bin_edges
        np.testing.assert_array_equal(prof.bin_index(e), np.arange(e.size))
        np.testing.assert_array_equal(prof.bin_index(np.nextafter(e, np.inf)), np.arange(1, e.size + 1))

    @pytest.mark.parametrize("family", NUMERIC_FAMILIES)
    @pytest.mark.parametrize("bins", [2, 7, 32, 200])
    def test_bins_valid_for_every_family(self, rng, family, bins):
        x = draw(family, rng, 10_000)
        prof = NumericProfile.from_values(x, bins=bins)
        assert_valid_bins(prof)
        assert prof.bin_probabilities.size <= bins
        np.testing.assert_allclose(data_shares(x, prof), prof.bin_probabilities, atol=1e-12)

    def test_poisson_ties_give_one_bin_per_value(self, rng):
        x = rng.poisson(3.0, 10_000).astype(float)
        prof = NumericProfile.from_values(x, bins=32)
        assert_valid_bins(prof)
        # a tied value is never split between bins: the edges are observed values, and
        # each value up to the 31/32 quantile is a bin of its own
        values, counts = np.unique(x, return_counts=True)
        k = prof.bin_edges.size
        np.testing.assert_array_equal(prof.bin_edges, values[:k])
        assert values[k - 1] == np.quantile(x, 31 / 32, method="inverted_cdf")
        np.testing.assert_allclose(prof.bin_probabilities[:k], counts[:k] / x.size, atol=1e-12)
        np.testing.assert_allclose(data_shares(x, prof), prof.bin_probabilities, atol=1e-12)

    def test_zero_inflated_ties(self, rng):
        x = np.where(rng.random(10_000) < 0.95, 0.0, rng.exponential(2.0, 10_000))
        prof = NumericProfile.from_values(x, bins=32)
        assert_valid_bins(prof)
        assert prof.bin_edges[0] == 0.0
        assert prof.bin_probabilities[0] == pytest.approx(np.mean(x == 0), abs=1e-12)
        assert prof.quantiles["0.5"] == 0.0

    @pytest.mark.parametrize("values", [[3.0], [2.0, 2.0, 2.0], [1.0, 2.0]])
    def test_degenerate_columns(self, values):
        prof = NumericProfile.from_values(np.array(values), bins=8)
        assert_valid_bins(prof)
        assert prof.bin_probabilities.sum() == pytest.approx(1.0)

    def test_empty_profile(self):
        prof = NumericProfile.from_values(np.array([np.nan, np.nan]))
        assert prof.count == 0 and prof.n_missing == 2 and prof.std == 0.0
        assert prof.bin_edges.size == 0 and prof.bin_probabilities.tolist() == [1.0]
        assert prof.quantiles == {}
        with pytest.raises(DetectorError):
            prof.sample(np.random.default_rng(0), 3)
        back = NumericProfile.from_dict(json_round_trip(prof.to_dict()))
        assert back.count == 0 and back.min == math.inf

    def test_reservoir_bounded_and_read_only(self, rng):
        prof = NumericProfile.from_values(rng.normal(size=30_000), reservoir_size=1_000)
        assert prof.reservoir.size == 1_000
        with pytest.raises(ValueError):
            prof.reservoir[0] = 1.0
        prof.update(rng.normal(size=5_000))
        assert prof.reservoir.size == 1_000 and prof.count == 35_000

    def test_reservoir_sample_tracks_the_population(self, rng):
        # the sketch error documented in the module: SE of a bin probability ~ sqrt(p(1-p)/R)
        x = rng.gamma(2.0, size=200_000)
        prof = NumericProfile.from_values(x, bins=32, reservoir_size=5_000)
        p = prof.bin_probabilities
        se = np.sqrt(p * (1 - p) / prof.reservoir_size)
        z = np.abs(data_shares(x, prof) - p) / se
        assert z.max() < 4.0, z  # Bonferroni over 32 bins at ~2e-3
        assert z.mean() < 1.3, z  # |N(0,1)| has mean 0.8

    @pytest.mark.parametrize("kwargs", [{"bins": 1}, {"bins": 2.5}, {"bins": True},
                                        {"reservoir_size": 5}, {"bins": 10_000}])
    def test_bad_settings(self, kwargs):
        with pytest.raises(DetectorError):
            NumericProfile(**kwargs)

    def test_wrong_dtype_is_a_type_error(self):
        with pytest.raises(TypeError, match="reference values"):
            NumericProfile.from_values(np.array(["a", "b"]))

    def test_repr(self, rng):
        r = repr(NumericProfile.from_values(rng.normal(size=100), bins=4))
        assert r.startswith("NumericProfile(count=100")


class TestNumericSerialisation:
    @pytest.mark.parametrize("family", NUMERIC_FAMILIES)
    def test_json_round_trip(self, rng, family):
        x = draw(family, rng, 12_000)
        x[:30] = np.nan
        prof = NumericProfile.from_values(x, bins=16, reservoir_size=4_000, seed=7)
        data = json_round_trip(prof.to_dict())
        assert data["schema_version"] == SCHEMA_VERSION and data["type"] == "numeric"
        back = profile_from_dict(data)
        assert isinstance(back, NumericProfile)
        assert back.to_dict() == prof.to_dict()
        np.testing.assert_array_equal(back.bin_edges, prof.bin_edges)
        np.testing.assert_array_equal(back.bin_probabilities, prof.bin_probabilities)
        np.testing.assert_array_equal(back.reservoir, prof.reservoir)
        # the restored profile keeps growing exactly like the original
        more = draw(family, rng, 3_000)
        assert back.update(more).to_dict() == prof.update(more).to_dict()

    def test_derived_figures_survive_without_recomputation(self, rng):
        prof = NumericProfile.from_values(rng.normal(size=1_000), bins=8)
        data = prof.to_dict()
        data["bin_probabilities"] = [0.5, 0.5]
        data["bin_edges"] = [0.0]
        back = NumericProfile.from_dict(data)
        assert back.bin_probabilities.tolist() == [0.5, 0.5]  # stored, not re-derived


class TestNumericMerge:
    @pytest.mark.parametrize("family", NUMERIC_FAMILIES)
    def test_halves_merge_into_the_whole(self, rng, family):
        x = draw(family, rng, 60_000)
        x[rng.choice(x.size, 600, replace=False)] = np.nan
        x[rng.choice(x.size, 60, replace=False)] = np.inf
        R = 5_000
        whole = NumericProfile.from_values(x, bins=32, reservoir_size=R)
        a = NumericProfile.from_values(x[:35_000], bins=32, reservoir_size=R, seed=1)
        b = NumericProfile.from_values(x[35_000:], bins=32, reservoir_size=R, seed=2)
        merged = a.merge(b)
        assert merged.count == whole.count
        assert (merged.n_missing, merged.n_invalid) == (whole.n_missing, whole.n_invalid)
        for attr in ("mean", "std", "min", "max"):
            assert getattr(merged, attr) == pytest.approx(getattr(whole, attr), rel=1e-9,
                                                          abs=1e-9), attr
        assert merged.reservoir.size == R
        # bin probabilities: each sketch within the documented error of the exact shares
        finite = x[np.isfinite(x)]
        for prof in (merged, whole):
            assert_valid_bins(prof)
            p = prof.bin_probabilities
            se = np.sqrt(p * (1 - p) / R)
            z = np.abs(data_shares(finite, prof) - p) / se
            assert z.max() < 4.0, (family, z)
        # and the two sketches agree with each other on the whole's bins
        p = whole.bin_probabilities
        q = data_shares(merged.reservoir, whole)
        se = np.sqrt(p * (1 - p) * 2 / R)
        assert (np.abs(q - p) / se).max() < 4.0

    def test_merged_reservoir_is_uniform_over_the_union(self):
        # 40k negative values and 10k positive ones: 80 % of a uniform sample is negative
        rng = np.random.default_rng(5)
        a = NumericProfile.from_values(-rng.random(40_000) - 1, reservoir_size=2_000, seed=1)
        b = NumericProfile.from_values(rng.random(10_000) + 1, reservoir_size=2_000, seed=2)
        for merged in (a.merge(b), b.merge(a)):
            share = np.mean(merged.reservoir < 0)
            assert abs(share - 0.8) < 4 * math.sqrt(0.8 * 0.2 / 2_000)

    def test_small_merges_are_exact(self, rng):
        x = rng.normal(size=3_000)
        a = NumericProfile.from_values(x[:1_000])
        merged = a.merge(NumericProfile.from_values(x[1_000:]))
        np.testing.assert_array_equal(np.sort(merged.reservoir), np.sort(x))

    def test_merge_with_empty_is_identity(self, rng):
        prof = NumericProfile.from_values(rng.normal(size=500))
        for m in (prof.merge(NumericProfile()), NumericProfile().merge(prof)):
            assert (m.count, m.mean, m.std, m.min, m.max) == pytest.approx(
                (prof.count, prof.mean, prof.std, prof.min, prof.max))

    def test_merge_type_checked(self):
        with pytest.raises(DetectorError):
            NumericProfile().merge(CategoricalProfile())  # type: ignore[arg-type]


# -- categorical -------------------------------------------------------------
def cats(values) -> np.ndarray:
    return np.array(values, dtype=object)


class TestCategorical:
    def test_counts_top_k_and_other(self, rng):
        names = np.array([f"c{i:02d}" for i in range(30)], dtype=object)
        p = rng.dirichlet(np.ones(30))
        x = names[rng.choice(30, 20_000, p=p)]
        x[rng.choice(x.size, 500, replace=False)] = None
        prof = CategoricalProfile.from_values(x, top_k=10)
        truth = Counter(v for v in x if v is not None)
        assert prof.counts == dict(truth)
        assert prof.count == sum(truth.values()) and prof.n_missing == 500
        ranked = sorted(truth.items(), key=lambda kv: (-kv[1], kv[0]))
        assert prof.categories == [c for c, _ in ranked[:10]]
        probs = prof.bin_probabilities
        assert probs.size == 11 and probs.sum() == pytest.approx(1.0)
        top = np.array([truth[c] for c in prof.categories]) / prof.count
        np.testing.assert_allclose(probs[:-1], top)
        assert probs[-1] == pytest.approx(1 - top.sum())
        assert not prof.truncated and prof.other_count == 0

    def test_ties_ranked_by_name(self):
        prof = CategoricalProfile.from_values(cats(["b", "a", "c", "a", "b", "c", "d"]), top_k=3)
        assert prof.categories == ["a", "b", "c"]

    def test_missing_values(self):
        prof = CategoricalProfile.from_values(cats(["x", None, float("nan"), "y", None]))
        assert (prof.count, prof.n_missing) == (2, 3)
        assert prof.missing_rate == pytest.approx(0.6)

    def test_non_string_values_are_stringified(self):
        prof = CategoricalProfile.from_values(cats([1, 2, 2, "2"]))
        assert prof.counts == {"2": 3, "1": 1}

    def test_truncation_at_max_tracked(self):
        rng = np.random.default_rng(1)
        frequent = [f"f{i}" for i in range(20)]
        prof = CategoricalProfile(top_k=5, max_tracked=50)
        for _ in range(5):
            batch = [*rng.choice(frequent, 2_000).tolist(),
                     *(f"rare{rng.integers(1e9)}" for _ in range(100))]
            prof.update(cats(batch))
        assert prof.truncated
        assert len(prof.counts) == 50
        assert sum(prof.counts.values()) + prof.other_count == prof.count == 5 * 2_100
        assert set(frequent) <= set(prof.counts)  # the rarest were folded, not the frequent
        assert prof.bin_probabilities.sum() == pytest.approx(1.0)
        back = CategoricalProfile.from_dict(json_round_trip(prof.to_dict()))
        assert back.truncated and back.other_count == prof.other_count

    def test_unseen_rate_is_good_turing(self):
        prof = CategoricalProfile.from_values(cats(["a"] * 10 + ["b", "c"] + ["d"] * 2))
        assert prof.singletons == 2
        assert prof.unseen_rate == pytest.approx(2 / 14)

    def test_json_round_trip(self, rng):
        x = rng.choice(cats(["é", "日本", "a b", "", "x"]), 5_000)
        x[:7] = None
        prof = CategoricalProfile.from_values(x, top_k=3)
        back = profile_from_dict(json_round_trip(prof.to_dict()))
        assert isinstance(back, CategoricalProfile)
        assert back.to_dict() == prof.to_dict()
        np.testing.assert_array_equal(back.bin_probabilities, prof.bin_probabilities)

    def test_halves_merge_into_the_whole(self, rng):
        x = rng.choice(cats(list("abcdefghij")), 10_000)
        x[::97] = None
        whole = CategoricalProfile.from_values(x, top_k=4)
        merged = CategoricalProfile.from_values(x[:3_333], top_k=4).merge(
            CategoricalProfile.from_values(x[3_333:], top_k=4))
        assert merged.to_dict() == whole.to_dict()

    def test_empty(self):
        prof = CategoricalProfile.from_values(cats([]), top_k=3)
        assert prof.count == 0 and prof.categories == []
        assert prof.bin_probabilities.tolist() == [1.0]
        assert prof.unseen_rate == 0.0 and prof.missing_rate == 0.0

    def test_bad_settings(self):
        with pytest.raises(DetectorError):
            CategoricalProfile(top_k=0)
        with pytest.raises(DetectorError):
            CategoricalProfile(top_k=10, max_tracked=5)
        with pytest.raises(DetectorError):
            CategoricalProfile().merge(NumericProfile())  # type: ignore[arg-type]


# -- schema -----------------------------------------------------------------
class TestSchema:
    @pytest.mark.parametrize("make", [
        lambda: NumericProfile.from_values(np.arange(10.0)),
        lambda: CategoricalProfile.from_values(cats(["a", "b"])),
    ])
    @pytest.mark.parametrize("version", [None, 0, SCHEMA_VERSION + 1, "1"])
    def test_version_mismatch_tells_to_rebuild(self, make, version):
        data = make().to_dict()
        if version is None:
            del data["schema_version"]
        else:
            data["schema_version"] = version
        with pytest.raises(DetectorError, match="rebuild"):
            profile_from_dict(data)

    def test_unknown_profile_type(self):
        with pytest.raises(DetectorError, match="numeric"):
            profile_from_dict({"schema_version": SCHEMA_VERSION, "type": "text"})
        with pytest.raises(DetectorError):
            profile_from_dict([])  # type: ignore[arg-type]

    def test_baseline_version_mismatch_tells_to_rebuild(self):
        base = ModelBaseline("m", {"x": NumericProfile.from_values(np.arange(10.0))})
        data = json_round_trip(base.to_dict())
        assert ModelBaseline.from_dict(data).id == base.id
        data["schema_version"] = SCHEMA_VERSION + 1
        with pytest.raises(DetectorError, match="rebuild"):
            ModelBaseline.from_dict(data)
        data = json_round_trip(base.to_dict())
        del data["columns"]["x"]["reservoir"]
        with pytest.raises(DetectorError, match="rebuild"):
            ModelBaseline.from_dict(data)
