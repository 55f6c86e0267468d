"""Configurations for the tests.

* :func:`m1_config` builds the configuration of a ``streamdrift run`` of model ``m1`` (the
  events of :mod:`tests.support.events`) as a dict; :func:`write_config` writes it as YAML.
* :func:`minimal_config` and :func:`config_errors` serve the unit tests of ``stream.config``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.events import COLUMNS, MODEL

#: the detection settings of the integration tests: a short window, quick decisions
DETECTION = {"false_alarm_events": 1_000_000, "window": 500, "cadence": 50}


def _column(name: str) -> dict[str, str]:
    kind = "categorical" if name.startswith("c") else "numeric"
    section = "p" if name == "score" else "f"
    return {"name": name, "path": f"{section}.{name}", "type": kind}


def m1_config(*, bootstrap: str, topic: str, group: str, port: int,
              columns: Sequence[str] = COLUMNS, version: str | None = None,
              baseline: Mapping[str, Any] | None = None,
              kafka: Mapping[str, Any] | None = None, dead_letter: str | None = None,
              max_message_bytes: int | None = None,
              detection: Mapping[str, Any] = DETECTION,
              metrics: Mapping[str, Any] | None = None,
              state: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A configuration that reads ``topic`` from ``bootstrap`` earliest-first in ``group``
    and monitors the ``columns`` of model m1 (events with ``"model": "m1"``; "score" is its
    prediction), serving metrics on 127.0.0.1:``port``.

    ``baseline`` defaults to ``{reference: reference.jsonl}`` beside the file; ``kafka`` adds
    to the consumer settings, ``metrics`` to the endpoint's; the other sections are left out
    when None.
    """
    source: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "topics": [topic], "group_id": group,
                  "auto_offset_reset": "earliest", **(kafka or {})},
        "timestamp": {"path": "ts", "unit": "s"},
    }
    if dead_letter is not None:
        source["dead_letter"] = {"topic": dead_letter}
    if max_message_bytes is not None:
        source["max_message_bytes"] = max_message_bytes
    model: dict[str, Any] = {"name": MODEL}
    if version is not None:
        model["version"] = version
    model["select"] = {"field": "model", "equals": MODEL}
    model["baseline"] = dict(baseline or {"reference": "reference.jsonl"})
    model["features"] = [_column(c) for c in columns if c != "score"]
    if "score" in columns:
        model["predictions"] = [_column("score")]
    config: dict[str, Any] = {
        "source": source,
        "models": [model],
        "detection": dict(detection),
        "metrics": {"port": port, "host": "127.0.0.1", **(metrics or {})},
    }
    if state is not None:
        config["state"] = dict(state)
    return config


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    """``config`` as a YAML file at ``path``; returns the path."""
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- unit tests

#: the one feature of :func:`minimal_config` unless told otherwise
INCOME = {"name": "income", "path": "features.income", "type": "numeric"}


def minimal_config(*features: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """The smallest valid configuration data: model ``credit`` with a baseline file and the
    given ``features`` (default: the numeric ``income``), plus the top-level ``sections``."""
    return {
        "models": [{
            "name": "credit",
            "baseline": {"file": "baseline.json"},
            "features": list(features) or [dict(INCOME)],
        }],
        **sections,
    }


def config_errors(data: Any, base_dir: Path | str = "/cfg", **kw: Any) -> list[str]:
    """The messages of the ConfigError that ``parse_config(data, base_dir, **kw)`` raises."""
    from stream.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as info:
        parse_config(data, base_dir, **kw)
    return list(info.value.errors)
