"""Reference data in the topic's format, for the formats other than plain JSON.

With ``source.format: open-inference`` a ``.jsonl`` reference holds requests and
responses, one per line, joined as the stream's are (by the body's ``id``: a file has no
headers); with ``avro``, a ``.jsonl`` reference holds the records as JSON objects, read as
``json`` events are.  CSV and Parquet references (columns named like the configured
features) serve every format.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from stream.config import Config, ModelConfig
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
    decoder = decoder_for(config)
    parts: dict[str, list[np.ndarray]] = {c.name: [] for c in model.columns}
    rejected: dict[str, int] = {}

    def take(lines: list[bytes]) -> None:
        batch = decoder.decode(lines)
        for reason, n in batch.invalid.items():
            rejected[reason] = rejected.get(reason, 0) + n
        mb = batch.models[model.name]
        for name in parts:
            parts[name].append(mb.columns[name])

    lines: list[bytes] = []
    with path.open("rb") as fh:
        while line := fh.readline(max_line_bytes + 1):
            if len(line) > max_line_bytes or not line.strip():
                while line and not line.endswith(b"\n"):
                    line = fh.readline(max_line_bytes)
                continue
            lines.append(line.rstrip(b"\r\n"))
            if len(lines) >= CHUNK_LINES:
                take(lines)
                lines = []
    take(lines)
    for reason, n in flush(decoder).items():
        rejected[reason] = rejected.get(reason, 0) + n
    if rejected:
        log.warning("reference %s: skipped messages: %s", path, rejected)
    return {c.name: np.concatenate(parts[c.name]) if parts[c.name]
            else np.empty(0, dtype=np.float64 if c.type == "numeric" else object)
            for c in model.columns}
