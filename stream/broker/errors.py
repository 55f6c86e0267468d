"""The one error of the local broker launcher."""

from __future__ import annotations


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or reached."""
