"""Exceptions of the detectors package."""


class StreamdriftError(Exception):
    """Root of every streamdrift exception."""


class DetectorError(StreamdriftError, ValueError):
    """A detector or baseline was built or restored with invalid input."""
