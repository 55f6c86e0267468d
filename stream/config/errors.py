"""The configuration's error type and its secret strings."""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence

from detectors.errors import StreamdriftError

__all__ = ["ConfigError", "Secret"]


class ConfigError(StreamdriftError):
    """The configuration is invalid.

    ``errors`` holds one line per problem, each starting with the key path
    (``models[0].features[2].type: must be one of numeric, categorical``);
    ``source`` names the file when there is one.
    """

    def __init__(
        self, errors: str | Sequence[str], *, source: str | os.PathLike[str] | None = None
    ):
        self.errors: tuple[str, ...] = (errors,) if isinstance(errors, str) else tuple(errors)
        self.source = None if source is None else str(source)
        super().__init__(self._format())

    def _format(self) -> str:
        where = f"invalid configuration {self.source}" if self.source else "invalid configuration"
        if len(self.errors) == 1:
            return f"{where}: {self.errors[0]}"
        lines = "\n".join(f"  {e}" for e in self.errors)
        return f"{where} ({len(self.errors)} errors):\n{lines}"


class Secret:
    """A secret string that never shows in ``repr()``, ``str()`` or logs.

    >>> s = Secret("hunter2")
    >>> s, str(s), f"{s}"
    (Secret('***'), "Secret('***')", "Secret('***')")
    >>> s.reveal()
    'hunter2'
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str):
            raise TypeError("Secret takes a str")
        self._value = value

    def reveal(self) -> str:
        """The secret itself; pass it straight to the client that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

