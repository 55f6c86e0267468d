"""The decoder of the configured ``source.format``.

Every decoder has ``decode(messages) -> DecodedBatch`` (``messages``: bytes, or Kafka
records where :attr:`Decoder.wants_records`) and ``flush()``, which returns the counts
(by reason) of what it still held when the input ends.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

from stream.config import Config, ConfigError
from stream.formats.batch import DecodedBatch

__all__ = ["Decoder", "decoder_for", "wants_records"]


class Decoder(Protocol):
    def decode(self, messages: Sequence[Any]) -> DecodedBatch: ...


def decoder_for(config: Config) -> Any:
    """A decoder of ``config.source.format``."""
    fmt = config.source.format
    if fmt == "open-inference":
        from stream.formats.oip import OipDecoder

        return OipDecoder(config)
    if fmt == "avro":
        try:
            import fastavro  # noqa: F401
        except ImportError:
            raise ConfigError("source.format: avro needs fastavro: pip install "
                              "'streamdrift[avro]'", source=config.path) from None
        from stream.formats.avro import AvroDecoder

        return AvroDecoder(config)
    # JSON: the numba scanner (stream.formats.scan), which leaves the rows it is not sure
    # of, and configurations it does not serve, to the columnar decoder (and that one to
    # today's BatchDecoder); STREAMDRIFT_JSON_DECODER=columnar skips the scanner
    if os.environ.get("STREAMDRIFT_JSON_DECODER", "scan") == "columnar":
        from stream.formats.columnar import ColumnarDecoder

        return ColumnarDecoder(config)
    from stream.formats.scan import ScanDecoder

    return ScanDecoder(config)


def wants_records(config: Config) -> bool:
    """Whether the decoder reads Kafka records (headers, key, topic), not only values."""
    return config.source.format == "open-inference"


def flush(decoder: Any) -> dict[str, int]:
    """What ``decoder`` still held at the end of the input, by reason (counted once)."""
    fn = getattr(decoder, "flush", None)
    return dict(fn()) if fn is not None else {}
