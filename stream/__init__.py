"""streamdrift runtime: configuration, sources, decoding, metrics, CLI."""

__version__ = "0.1.0"
