"""The file source of ``replay``: the lines of a file of events, in batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def iter_batches(path: Path, batch_lines: int) -> Iterator[list[bytes]]:
    """Lines of ``path`` in batches; every line counts (empty ones too: they are invalid)."""
    batch: list[bytes] = []
    with path.open("rb") as fh:
        for line in fh:
            batch.append(line.rstrip(b"\r\n"))
            if len(batch) >= batch_lines:
                yield batch
                batch = []
    if batch:
        yield batch
