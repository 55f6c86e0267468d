"""The test suite of streamdrift; a package only so that :mod:`tests.support` is importable."""
