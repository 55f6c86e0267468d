"""Hidden columns: event fields that segments and facets read beside a model's columns.

A segment or facet field that is not one of the model's columns is added to the
configuration the batch decoder reads as a hidden categorical column, so that it is
extracted with the columns, vectorised; the monitors never see it (the batch is stripped
with :func:`stream.formats.batch.without_columns` first).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from stream.config import ColumnConfig, ModelConfig


def column_at(model: ModelConfig, path: tuple[str, ...], hidden: str) -> str:
    """The decoded column holding the values at ``path``: the model's column there, or
    the hidden column ``hidden``."""
    for c in model.columns:
        if c.path == path:
            return c.name
    return hidden


def with_hidden(model: ModelConfig, fields: Iterable[tuple[str, tuple[str, ...]]],
                ) -> ModelConfig:
    """``model`` with a hidden categorical column ``(name, path)`` for each field whose
    path is not one of its columns (one per path)."""
    extra: list[ColumnConfig] = []
    for name, path in fields:
        if column_at(model, path, name) == name and all(c.path != path for c in extra):
            extra.append(ColumnConfig(name, path, "categorical", "feature", ()))
    return dataclasses.replace(model, features=model.features + tuple(extra)) if extra \
        else model
