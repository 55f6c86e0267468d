"""The pipeline gives the same results with the scanner's category codes as without.

The scanner hands each categorical column to the monitors also as codes into the batch's
table of distinct strings (``ModelBatch.coded``), so that a monitor looks each distinct
string up once.  Here the pinned behaviour's input (two models, categorical drift,
malformed lines of every kind) is replayed through two pipelines, one fed the scanner's
batches as they are and one fed the same batches without the codes (the object columns
alone, as the columnar decoder gives them), with more unseen categories and nulls spliced
in; every detection, close, episode, counter and the final report must be equal.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import pytest

from stream.config.load import load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.formats.batch import DecodedBatch
from stream.formats.scan import ScanDecoder

PINNED = Path(__file__).resolve().parent / "pinned"


class WithoutCodes(ScanDecoder):
    """The scanner's batches with the object columns alone."""

    def decode(self, messages: Any) -> DecodedBatch:
        batch = super().decode(messages)
        for mb in batch.models.values():
            mb.coded = {}
        return batch


def events() -> list[bytes]:
    lines = gzip.decompress((PINNED / "events.jsonl.gz").read_bytes()).splitlines()
    out = []
    for i, line in enumerate(lines):
        if i % 97 == 5:  # an unseen country, an unseen merchant
            line = line.replace(b'"country":"de"', b'"country":"xx"').replace(
                b'"merchant":"online"', b'"merchant":"casino"')
        elif i % 89 == 3:  # nulls
            line = line.replace(b'"country":"de"', b'"country":null').replace(
                b'"label":"ok"', b'"label":null')
        elif i % 501 == 7:  # a number where a category goes: flagged, decoded carefully
            line = line.replace(b'"merchant":"online"', b'"merchant":12')
        out.append(line)
    return out


def test_codes_change_no_result(tmp_path: Path) -> None:
    shutil.copy(PINNED / "config.yaml", tmp_path / "config.yaml")
    for name in ("reference-credit", "reference-fraud"):
        (tmp_path / f"{name}.jsonl").write_bytes(
            gzip.decompress((PINNED / f"{name}.jsonl.gz").read_bytes()))
    config = load_config(tmp_path / "config.yaml")
    baselines = resolve_baselines(config)
    def clock() -> float:  # the same wall clock for both (episodes record it)
        return 1_800_000_000.0

    coded, plain = Pipeline(config, baselines, clock), Pipeline(config, baselines, clock)
    assert isinstance(coded.decoder, ScanDecoder) and coded.decoder.scanning
    plain.decoder.__class__ = WithoutCodes  # the same decoder, the codes dropped
    lines = events()
    used = 0
    for start in range(0, len(lines), 1_700):
        batch = lines[start:start + 1_700]
        got, decoded = coded.process(batch, base_index=start)
        want, _ = plain.process(batch, base_index=start)
        used += sum(len(mb.coded) for mb in decoded.models.values())
        assert got == want
        assert coded.last_closes == plain.last_closes
        assert coded.last_episodes == plain.last_episodes
    assert used, "the scanner handed the codes over"
    assert coded.decoder.flagged_messages > 0  # type: ignore[attr-defined]
    assert coded.report_models() == plain.report_models()
    assert dict(coded.invalid) == dict(plain.invalid)
    for name in coded.fresh:
        a, b = coded.monitor(name), plain.monitor(name)
        assert a is not None and b is not None
        assert a.to_dict() == b.to_dict()
    assert any(d.detector in ("chi2", "surprisal", "unseen") for d in coded.recent_alarms), \
        "a categorical detector alarms on this input"


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
