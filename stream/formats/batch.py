"""What decoding a poll batch produces: per model, one numpy column per configured column."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

__all__ = ["EMPTY_INT", "INVALID", "INVALID_REASONS", "MAX_CATEGORY_CHARS", "DecodedBatch", "ModelBatch"]

#: Event-level reasons for rejecting a message (the ``reason`` metric label).
#: ``wrong_structure``: an object whose model's column paths cannot be walked, because it
#: holds a non-object (not null) where a path descends (``"features": "oops"`` for
#: ``features.x``); it is an invalid event, not one missing value per column.
INVALID_REASONS: Final = ("invalid_json", "not_an_object", "oversized", "unknown_model",
                          "wrong_structure")
#: Category strings are cut to this many characters.
MAX_CATEGORY_CHARS: Final = 200

#: the value of a message or field that cannot be read
class Invalid:
    def __repr__(self) -> str:
        return "<invalid>"


INVALID: Final = Invalid()
EMPTY_INT: Final = np.empty(0, dtype=np.int64)
EMPTY_INT.flags.writeable = False


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------
@dataclass(slots=True)
class ModelBatch:
    """The events of one batch that belong to one model, as columns.

    Every array is parallel to ``positions``.  The dicts have one entry per
    configured column (features then predictions), zero counts included.
    """

    #: int64 positions of the model's events in the input batch, ascending
    positions: np.ndarray
    #: column name -> float64 (numeric) or object array of str/None (categorical)
    columns: dict[str, np.ndarray]
    #: column name -> number of invalid values (wrong type, non-finite)
    invalid_values: dict[str, int]
    #: column name -> number of missing values (absent key, null, null parent)
    missing_values: dict[str, int]
    #: column name -> bool mask of invalid values
    invalid_mask: dict[str, np.ndarray]
    #: column name -> bool mask of missing values
    missing_mask: dict[str, np.ndarray] = field(default_factory=dict)
    #: float64 event time in seconds since the epoch (NaN where unknown), or None
    #: when ``source.timestamp`` is not configured
    timestamps: np.ndarray | None = None
    #: bool mask of the events whose timestamp is present but not a time (None
    #: when ``source.timestamp`` is not configured)
    invalid_timestamp_mask: np.ndarray | None = None
    #: the raw ids of the events (``labels.id_path``), or None when the model has no labels
    ids: list[Any] | None = None
    #: embedding column name -> its batch (stream.formats.vectors.VectorColumn); empty
    #: when the model has no ``type: vector`` feature
    vectors: dict[str, Any] = field(default_factory=dict)
    #: categorical column name -> the same values as codes into a table of strings
    #: (:class:`detectors.column.CodedColumn`, bound to the ``columns`` array by identity),
    #: for the decoders that intern strings (the scanner); the monitors then look up each
    #: distinct string once.  Empty otherwise; :meth:`take` and :func:`batch_tail` leave
    #: it out (the object columns stay the reference).
    coded: dict[str, Any] = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return int(self.positions.shape[0])

    def take(self, keep: np.ndarray) -> ModelBatch:
        """The events at indices ``keep`` (int64, ascending) of this batch."""
        inv = {c: m[keep] for c, m in self.invalid_mask.items()}
        mis = {c: m[keep] for c, m in self.missing_mask.items()}
        return ModelBatch(
            positions=self.positions[keep],
            columns={c: v[keep] for c, v in self.columns.items()},
            invalid_values={c: int(np.count_nonzero(m)) for c, m in inv.items()},
            missing_values={c: int(np.count_nonzero(m)) for c, m in mis.items()},
            invalid_mask=inv,
            missing_mask=mis,
            timestamps=None if self.timestamps is None else self.timestamps[keep],
            invalid_timestamp_mask=None if self.invalid_timestamp_mask is None
            else self.invalid_timestamp_mask[keep],
            ids=None if self.ids is None else [self.ids[i] for i in keep.tolist()],
            vectors={k: v.take(keep) for k, v in self.vectors.items()},
        )

    @property
    def invalid_timestamps(self) -> int:
        """Events whose timestamp is present but not a time (0 without ``source.timestamp``)."""
        mask = self.invalid_timestamp_mask
        return 0 if mask is None else int(np.count_nonzero(mask))


@dataclass(slots=True)
class DecodedBatch:
    n_messages: int
    #: reason -> count of rejected messages (non-zero counts only)
    invalid: dict[str, int]
    #: int64 positions of rejected messages, ascending
    invalid_positions: np.ndarray
    #: reason of each rejected message, parallel to ``invalid_positions``
    invalid_reasons: list[str]
    #: model name -> its events (every configured model has an entry)
    models: dict[str, ModelBatch]
    #: events (rows) decoded, for formats where one message carries several
    #: (``open-inference``); None: one event per valid message
    n_rows: int | None = None

    @property
    def n_valid(self) -> int:
        """Messages routed to at least one model."""
        return self.n_messages - len(self.invalid_reasons)

    @property
    def n_events(self) -> int:
        """Events decoded: rows, or the valid messages where each is one event."""
        return self.n_valid if self.n_rows is None else self.n_rows


# --------------------------------------------------------------------------
# the decoder


def merge_invalid(positions: np.ndarray, reasons: list[str], more_positions: np.ndarray,
                  more_reasons: list[str]) -> tuple[np.ndarray, list[str]]:
    """Two lists of rejected messages (positions in the batch, reasons) as one, in batch
    order (stable: at equal positions ``reasons`` come first)."""
    positions = np.concatenate([positions, more_positions])
    reasons = reasons + more_reasons
    order = np.argsort(positions, kind="stable")
    return positions[order], [reasons[i] for i in order.tolist()]


def invalid_counts(reasons: Sequence[str]) -> dict[str, int]:
    """Rejected messages per reason (:attr:`DecodedBatch.invalid`): the JSON reasons in
    their order, then those of a format that decoded the events, sorted."""
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    ordered = (*INVALID_REASONS, *sorted(set(counts) - set(INVALID_REASONS)))
    return {r: counts[r] for r in ordered if r in counts}


def without_columns(mb: ModelBatch, hidden: Collection[str]) -> ModelBatch:
    """``mb`` without the columns named in ``hidden`` (the hidden columns that segments,
    facets and attributions have the decoder read beside the model's own)."""
    if not hidden:
        return mb
    h = hidden
    return dataclasses.replace(
        mb, columns={c: v for c, v in mb.columns.items() if c not in h},
        invalid_values={c: v for c, v in mb.invalid_values.items() if c not in h},
        missing_values={c: v for c, v in mb.missing_values.items() if c not in h},
        invalid_mask={c: v for c, v in mb.invalid_mask.items() if c not in h},
        missing_mask={c: v for c, v in mb.missing_mask.items() if c not in h})


def batch_tail(mb: ModelBatch, start: int) -> ModelBatch:
    """The events of ``mb`` at input positions >= ``start``."""
    i = int(np.searchsorted(mb.positions, start))
    if i == 0:
        return mb
    inv = {c: m[i:] for c, m in mb.invalid_mask.items()}
    mis = {c: m[i:] for c, m in mb.missing_mask.items()}
    return ModelBatch(
        positions=mb.positions[i:],
        columns={c: v[i:] for c, v in mb.columns.items()},
        invalid_values={c: int(m.sum()) for c, m in inv.items()},
        missing_values={c: int(m.sum()) for c, m in mis.items()},
        invalid_mask=inv,
        missing_mask=mis,
        timestamps=None if mb.timestamps is None else mb.timestamps[i:],
        invalid_timestamp_mask=None if mb.invalid_timestamp_mask is None
        else mb.invalid_timestamp_mask[i:],
        ids=None if mb.ids is None else mb.ids[i:],
        vectors={k: v.take(slice(i, None)) for k, v in mb.vectors.items()},
    )
