"""Pure statistics for streamdrift: baseline profiles, detectors, calibration.

No I/O happens in this package: it works on numpy arrays and plain data.
"""
