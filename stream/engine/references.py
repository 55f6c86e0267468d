"""Reference data in the topic's format, for the formats other than plain JSON.

With ``source.format: open-inference`` a ``.jsonl`` reference holds requests and
responses, one per line, joined as the stream's are (by the body's ``id``: a file has no
headers); with ``avro``, a ``.jsonl`` reference holds the records as JSON objects, read as
``json`` events are.  CSV and Parquet references (columns named like the configured
features) serve every format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stream.config import Config, ModelConfig
from stream.formats.batch import ModelBatch
from stream.formats.decoders import decoder_for, flush

log = logging.getLogger("streamdrift.baseline")

#: lines decoded at once
CHUNK_LINES = 20_000


def reads_reference_as_stream(config: Config, path: Path) -> bool:
    """Whether ``path`` is read by the stream's own decoder (open-inference JSONL)."""
    return (config.source.format == "open-inference"
            and path.suffix.lower() in (".jsonl", ".ndjson", ".json"))


def read_stream_reference(config: Config, model: ModelConfig, path: Path,
                          max_line_bytes: int) -> dict[str, np.ndarray]:
    """Columns of ``model`` from a reference file decoded as the stream is."""
    parts: dict[str, list[np.ndarray]] = {c.name: [] for c in model.columns}

    def take(mb: ModelBatch) -> None:
        for name in parts:
            parts[name].append(mb.columns[name])

    _decode_file(config, model, path, max_line_bytes, take)
    return {c.name: np.concatenate(parts[c.name]) if parts[c.name]
            else np.empty(0, dtype=np.float64 if c.type == "numeric" else object)
            for c in model.columns}


def read_stream_reference_vectors(config: Config, model: ModelConfig, path: Path,
                                  max_line_bytes: int) -> dict[str, np.ndarray]:
    """vector column -> the ``(events, dim)`` matrix of ``model``'s embedding columns in a
    reference file decoded as the stream is (e.g. OIP requests whose ``[n, dim]`` tensor
    holds the vectors); NaN rows where a vector is malformed, as live."""
    parts: dict[str, list[np.ndarray]] = {v.name: [] for v in model.vectors}
    malformed: dict[str, int] = {}

    def take(mb: ModelBatch) -> None:
        for name in parts:
            col = mb.vectors[name]
            parts[name].append(col.values)
            for reason, n in col.counts().items():
                if n:
                    malformed[reason] = malformed.get(reason, 0) + n

    _decode_file(config, model, path, max_line_bytes, take)
    if malformed:
        log.warning("reference %s: malformed vectors left out: %s", path, malformed)
    return {v.name: np.vstack(parts[v.name]) if parts[v.name] else np.empty((0, v.dim))
            for v in model.vectors}


def _decode_file(config: Config, model: ModelConfig, path: Path, max_line_bytes: int,
                 take: Callable[[ModelBatch], None]) -> None:
    """Decode ``path`` in chunks of lines with the stream's decoder; ``take`` each chunk's
    batch of ``model``; log the messages the decoder rejected."""
    decoder = decoder_for(config)
    rejected: dict[str, int] = {}

    def chunk(lines: list[bytes]) -> None:
        batch = decoder.decode(lines)
        for reason, n in batch.invalid.items():
            rejected[reason] = rejected.get(reason, 0) + n
        take(batch.models[model.name])

    lines: list[bytes] = []
    with path.open("rb") as fh:
        while line := fh.readline(max_line_bytes + 1):
            if len(line) > max_line_bytes or not line.strip():
                while line and not line.endswith(b"\n"):
                    line = fh.readline(max_line_bytes)
                continue
            lines.append(line.rstrip(b"\r\n"))
            if len(lines) >= CHUNK_LINES:
                chunk(lines)
                lines = []
    chunk(lines)
    for reason, n in flush(decoder).items():
        rejected[reason] = rejected.get(reason, 0) + n
    if rejected:
        log.warning("reference %s: skipped messages: %s", path, rejected)
