"""Partition skew: do the partitions this process holds see alike streams?

Each partition's monitors compare their stream with the model-wide baseline.  That is
right only if every partition carries a representative share of the model's traffic:
true with null keys or keys hashed from ids unrelated to the features, false when the
producer keys the topic by a feature (country, tenant, region).  Then every partition
looks drifted, for good.  :class:`PartitionSkew` finds out from the data:

* per (model, partition) it keeps the baseline-bin counts of every column over the
  model's recent events (:class:`~detectors.homogeneity.BlockedCounts`: ``window`` events
  per partition on average; the blocks of all partitions close together, so that every
  partition's window covers the same stretch of the stream whatever its rate, and a
  drift of the whole stream reaches every window alike;
  numbers binned by the baseline's quantile bins, categories by its top categories and
  one *other* bucket; missing and invalid values left out), updated per batch from the
  bins the column monitors have just computed (``ColumnMonitor.last_codes``): one
  ``bincount`` per batch, no second look at the values;
* every ``interval_s`` seconds (and, until a check could compare two partitions, every
  few seconds) it tests each column for homogeneity across the partitions that have
  ``min_events`` values of it (:func:`~detectors.homogeneity.homogeneity_test`) at
  ``false_alarm / columns`` (Bonferroni: ``false_alarm`` is the probability that one
  check of a model warns on alike partitions);
* a column whose partitions differ opens a skew *episode*: ONE warning log line naming
  the model, the column and the likely cause, repeated at most every ``repeat_s`` while
  it lasts, and the metrics ``streamdrift_partition_skew_*``; it closes after
  :data:`CLEAR_CHECKS` checks in a row without the evidence.

The likely cause is ``column_is_key`` when nearly every value (:data:`KEY_PURITY`) lies
in the partition holding most of its bin (each category on one partition: the topic is
keyed by this column), else ``correlated_with_key``.

Only the partitions this process holds are compared: with one partition per process
nothing can be tested (``streamdrift_partition_skew_partitions`` shows how many were).
``replay`` (no partitions) keeps no skew state.  The windows are not checkpointed: after
a restart or a rebalance they fill again from the live stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from detectors.homogeneity import KEY_PURITY, BlockedCounts, HomogeneityResult, homogeneity_test
from detectors.model import ModelBaseline, ModelMonitor
from detectors.profile import CategoricalProfile, NumericProfile
from stream.config import PartitionCheckConfig
from stream.engine.figures import PartitionKey

log = logging.getLogger("streamdrift.skew")

#: the causes the metrics and logs name
CAUSES = ("column_is_key", "correlated_with_key")
#: checks in a row without evidence that close a skew episode
CLEAR_CHECKS = 3
#: seconds between checks until one could compare two partitions
STARTUP_RETRY_S = 5.0
#: blocks of the per-partition window
BLOCKS = 10
_NO_CODES = np.empty(0, dtype=np.int64)
_CAUSE_TEXT = {
    "column_is_key": "the topic looks keyed by {col}: each of its values lives on one "
                     "partition",
    "correlated_with_key": "the producer's key is likely correlated with {col} (or a "
                           "partition is read far behind the others)",
}


@dataclass(frozen=True, slots=True)
class SkewColumnFigures:
    """The last test of one column across partitions."""

    role: str
    #: statistic / threshold of the last test that could compare partitions (≥ 1: unlike)
    score: float
    #: largest total-variation distance of a partition to the pooled stream
    effect: float
    #: a skew episode is open
    active: bool
    #: its likely cause (one of :data:`CAUSES`), or the last test's when none is open
    cause: str


@dataclass(frozen=True, slots=True)
class SkewFigures:
    """One model's partition check."""

    #: partitions compared by the last check (0 or 1: nothing could be tested)
    partitions: int
    #: checks that compared at least two partitions
    checks: int
    #: the columns tested at least once
    columns: Mapping[str, SkewColumnFigures]


class _Column:
    __slots__ = ("k", "name", "numeric", "offset", "role")

    def __init__(self, name: str, role: str, profile: NumericProfile | CategoricalProfile,
                 offset: int) -> None:
        self.name, self.role, self.offset = name, role, offset
        self.numeric = isinstance(profile, NumericProfile)
        if isinstance(profile, NumericProfile):
            self.k = profile.bin_edges.size + 1
        else:
            self.k = len(profile.categories) + 1  # the last bin: every other category


class _Episode:
    __slots__ = ("active", "cause", "clear", "effect", "logged", "score")

    def __init__(self) -> None:
        self.active = False
        self.cause = CAUSES[1]
        self.clear = 0
        self.logged = -math.inf
        self.score = self.effect = 0.0


class _ModelSkew:
    """The windows and episodes of one model."""

    def __init__(self, name: str, baseline: ModelBaseline, columns: Sequence[tuple[str, str]],
                 cfg: PartitionCheckConfig) -> None:
        self.name, self.cfg, self.baseline = name, cfg, baseline
        self.columns: list[_Column] = []
        offset = 0
        for col, role in columns:
            c = _Column(col, role, baseline.profiles[col], offset)
            self.columns.append(c)
            offset += c.k
        self.size = offset
        self.windows: dict[PartitionKey, BlockedCounts] = {}
        #: the model's events (all partitions) since the blocks last closed
        self.block_fill = 0
        self.episodes: dict[str, _Episode] = {}
        self.partitions = 0
        self.checks = 0
        #: since when the checks found one partition only (None: not alone); the notice
        #: is logged once, when that has lasted interval_s
        self.alone_since: float | None = None
        self.told_alone = False

    def update(self, key: PartitionKey, monitor: ModelMonitor, n: int) -> None:
        ring = self.windows.get(key)
        if ring is None:
            ring = self.windows[key] = BlockedCounts(self.size, None, BLOCKS)
        parts = []
        for c in self.columns:
            cm = monitor.columns[c.name]
            codes = cm.last_codes
            if codes.size:
                parts.append((codes >> cm.last_shift) + c.offset)
        ring.update(np.concatenate(parts) if parts else _NO_CODES, n)
        self.block_fill += n
        if self.block_fill >= self.cfg.window * len(self.windows) / BLOCKS:
            for w in self.windows.values():
                w.next_block()
            self.block_fill = 0

    def check(self, now: float) -> bool:
        """Test every column; True if at least two partitions could be compared."""
        cfg = self.cfg
        keys = sorted(k for k, w in self.windows.items() if w.events >= cfg.min_events)
        self.partitions = len(keys)
        if len(keys) < 2:
            since = self.alone_since if self.alone_since is not None else now
            alone = len(keys) == 1 and len(self.windows) == 1
            self.alone_since = since if alone else None
            if alone and not self.told_alone and now - since >= cfg.interval_s:
                self.told_alone = True
                log.info("partition check: this process reads one partition of model %s, "
                         "so partitions cannot be compared here (a process that reads "
                         "several, e.g. with one partition per process a one-off run with "
                         "its own group_id, can)", self.name,
                         extra={"model": self.name, "partition": f"{keys[0][0]}[{keys[0][1]}]"})
            for col in self.columns:
                ep = self.episodes.get(col.name)
                if ep is not None and ep.active:
                    self._no_evidence(col, ep, "untestable")
            return False
        self.alone_since = None
        self.checks += 1
        counts = np.stack([self.windows[k].counts for k in keys])
        alpha = cfg.false_alarm / len(self.columns)
        for col in self.columns:
            tab = counts[:, col.offset:col.offset + col.k]
            res = homogeneity_test(tab, alpha, ordered=col.numeric, min_effect=cfg.min_effect,
                                   min_count=cfg.min_events,
                                   skip_purity=None if col.numeric else col.k - 1)
            ep = self.episodes.get(col.name)
            if res.dof == 0:
                if ep is not None and ep.active:
                    self._no_evidence(col, ep, "untestable")
                continue
            if ep is None:
                ep = self.episodes[col.name] = _Episode()
            ep.score, ep.effect = res.score, res.effect
            if not res.rejected:
                if ep.active:
                    self._no_evidence(col, ep, "cleared")
                continue
            ep.clear = 0
            ep.cause = CAUSES[0] if res.purity >= KEY_PURITY else CAUSES[1]
            tested = [k for k, w in zip(keys, tab.sum(axis=1), strict=True)
                      if w >= cfg.min_events]
            if not ep.active or now - ep.logged >= cfg.repeat_s:
                self._warn(col, ep, res, tested, again=ep.active)
                ep.active, ep.logged = True, now
        return True

    def _warn(self, col: _Column, ep: _Episode, res: HomogeneityResult,
              keys: Sequence[PartitionKey], again: bool) -> None:
        worst = keys[res.worst]
        log.warning(
            "partition skew%s: the partitions of model %s differ in %s more than chance "
            "allows (%d partitions compared; %s[%d] differs most, total variation %.2f); "
            "%s. Each partition's detectors compare a slice of the traffic with the "
            "model-wide baseline, so their drift alarms on %s (and on columns related to "
            "it) are not to be trusted. Produce "
            "with null keys or keys unrelated to the features (e.g. a hash of the event "
            "id); see docs/runbooks.md#streamdriftpartitionskew",
            " (still)" if again else "", self.name, col.name, res.partitions, worst[0],
            worst[1], res.effect, _CAUSE_TEXT[ep.cause].format(col=col.name), col.name,
            extra={"model": self.name, "feature": col.name, "role": col.role,
                   "cause": ep.cause, "statistic": round(res.statistic, 2),
                   "threshold": round(res.threshold, 2), "p_value": res.p_value,
                   "effect": round(res.effect, 4), "purity": round(res.purity, 4),
                   "partitions": [f"{t}[{p}]" for t, p in keys],
                   "most_different": f"{worst[0]}[{worst[1]}]"})

    def _no_evidence(self, col: _Column, ep: _Episode, why: str) -> None:
        ep.clear += 1
        if ep.clear >= CLEAR_CHECKS:
            ep.active, ep.clear = False, 0
            log.info("partition skew episode closed: %s", why if why == "cleared" else
                     "fewer than two partitions with enough events to compare",
                     extra={"model": self.name, "feature": col.name, "role": col.role,
                            "reason": why})

    def figures(self) -> SkewFigures:
        return SkewFigures(self.partitions, self.checks, {
            c.name: SkewColumnFigures(c.role, ep.score, ep.effect, ep.active, ep.cause)
            for c in self.columns if (ep := self.episodes.get(c.name)) is not None})


class PartitionSkew:
    """The partition check of every model (see the module's docstring).

    The pipeline calls :meth:`update` with each partition's model batches,
    :meth:`maybe_check` after each batch and :meth:`drop` when a partition goes.
    """

    def __init__(self, cfg: PartitionCheckConfig, baselines: Mapping[str, ModelBaseline],
                 columns: Mapping[str, Sequence[tuple[str, str]]]) -> None:
        self.cfg = cfg
        self.models = {name: _ModelSkew(name, baselines[name], cols, cfg)
                       for name, cols in columns.items()}
        self.next_check = -math.inf
        self.checked: set[str] = set()

    def update(self, model: str, key: PartitionKey, monitor: ModelMonitor, n: int) -> None:
        """Count the batch that ``monitor`` (of ``model`` on partition ``key``) has just
        processed: the bins of its columns' valid values (``ColumnMonitor.last_codes``)."""
        self.models[model].update(key, monitor, n)

    def drop(self, key: PartitionKey) -> None:
        for m in self.models.values():
            m.windows.pop(key, None)

    def maybe_check(self, now: float) -> bool:
        """Run the checks if one is due; True if they ran."""
        if now < self.next_check:
            return False
        if not any(m.windows for m in self.models.values()):
            return False
        compared = False
        for name, m in self.models.items():
            if m.windows:
                self.checked.add(name)
            compared |= m.check(now)
        self.next_check = now + (self.cfg.interval_s if compared
                                 else min(self.cfg.interval_s, STARTUP_RETRY_S))
        return True

    def figures(self) -> dict[str, SkewFigures]:
        """model -> figures, for the models checked at least once."""
        return {name: self.models[name].figures() for name in sorted(self.checked)}
