"""Reading the files a configuration points to, bounded: regular files of a limited size.

Every file streamdrift reads on an operator's behalf (the configuration, the web config,
secret files, baselines, reference data) goes through :func:`regular_file` or
:func:`read_bounded`, so that a path to ``/dev/zero``, a FIFO, a directory or a huge file
is refused with one line naming the file and the limit, instead of blocking, filling the
memory or running for ever.  The limits are documented in ``docs/security.md``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from stream.config.errors import ConfigError

MiB: Final = 1024 * 1024
GiB: Final = 1024 * MiB

#: the configuration file and the metrics web config (a real one is a few kB)
MAX_YAML_BYTES: Final = 1 * MiB
#: a secret file (a password)
MAX_SECRET_BYTES: Final = 64 * 1024
#: a baseline file (200 numeric columns at the default reservoir of 10,000 values: ~50 MB)
MAX_BASELINE_BYTES: Final = 256 * MiB
#: a reference data file (read in chunks, but the configured columns are kept in memory)
MAX_REFERENCE_BYTES: Final = 4 * GiB


class FileRefused(ConfigError):
    """A file that is not a regular file, cannot be opened, or is over its size limit."""


def size_text(n: int) -> str:
    """``1048576`` -> ``1 MiB``."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _open(path: Path, what: str, limit: int) -> tuple[int, int]:
    """An fd open on the regular file ``path`` and its size; FileRefused otherwise."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (no effect on regular files)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileRefused(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise FileRefused(f"{what} file {path} is a directory, not a regular file") from None
    except OSError as exc:
        raise FileRefused(
            f"cannot read {what} file {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"{what} file {path} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise FileRefused(f"{what} file {path} is {st.st_size} bytes, over the limit of "
                              f"{size_text(limit)} for a {what} file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def regular_file(path: Path, what: str, limit: int) -> int:
    """Check that ``path`` is a regular file of at most ``limit`` bytes; its size.

    Raises :class:`FileRefused` (a :class:`ConfigError`) naming the file and the limit.
    """
    fd, size = _open(path, what, limit)
    os.close(fd)
    return size


def read_bounded(path: Path, what: str, limit: int) -> bytes:
    """The content of the regular file ``path``, of at most ``limit`` bytes.

    The size is checked before reading and again while reading (a file that grows in
    between is refused too).  Raises :class:`FileRefused` naming the file and the limit.
    """
    fd, _ = _open(path, what, limit)
    try:
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise FileRefused(
            f"cannot read {what} file {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > limit:
        raise FileRefused(f"{what} file {path} is over the limit of {size_text(limit)} "
                          f"for a {what} file")
    return data
