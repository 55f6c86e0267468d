"""The optional ``state:`` section: detector state checkpoints of ``streamdrift run``."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stream.config import StateConfig, load_config, parse_config
from tests.support.configs import config_errors, minimal_config


def minimal(state: Any = dataclasses.MISSING, **source: Any) -> dict[str, Any]:
    sections: dict[str, Any] = {}
    if source:
        sections["source"] = source
    if state is not dataclasses.MISSING:
        sections["state"] = state
    return minimal_config(**sections)


KAFKA = {"bootstrap_servers": "127.0.0.1:9092", "topics": ["events"]}


def test_defaults_when_absent_or_null() -> None:
    for data in (minimal(), minimal(None), minimal({})):
        cfg = parse_config(data, "/cfg")
        assert cfg.state == StateConfig()
        assert (cfg.state.enabled, cfg.state.topic, cfg.state.checkpoint_interval_s) == (
            True, "streamdrift-state", 30.0)


def test_frozen() -> None:
    cfg = parse_config(minimal({"enabled": False}), "/cfg")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.state.enabled = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.state = StateConfig()  # type: ignore[misc]


def test_all_keys(tmp_path: Path) -> None:
    path = tmp_path / "streamdrift.yaml"
    path.write_text(textwrap.dedent("""\
        source:
          kafka: {bootstrap_servers: "127.0.0.1:9092", topics: [events]}
        models:
          - name: m
            baseline: {file: b.json}
            features: [{name: a, path: a, type: numeric}]
        state:
          enabled: false
          topic: team.streamdrift-state
          checkpoint_interval_s: 2.5
        """))
    cfg = load_config(path)
    assert cfg.state == StateConfig(enabled=False, topic="team.streamdrift-state",
                                    checkpoint_interval_s=2.5)


def test_null_values_take_the_defaults() -> None:
    cfg = parse_config(minimal({"enabled": None, "topic": None, "checkpoint_interval_s": None}),
                       "/cfg")
    assert cfg.state == StateConfig()


def test_interval_accepts_integers_and_quoted_numbers() -> None:
    assert parse_config(minimal({"checkpoint_interval_s": 5}), "/").state.checkpoint_interval_s \
        == 5.0
    assert parse_config(minimal({"checkpoint_interval_s": "0.5"}), "/").state \
        .checkpoint_interval_s == 0.5


def test_environment_substitution() -> None:
    cfg = parse_config(minimal({"topic": "${ENV:STATE_TOPIC}"}), "/",
                       environ={"STATE_TOPIC": "from-env"})
    assert cfg.state.topic == "from-env"
    assert config_errors(minimal({"topic": "${ENV:NOPE}"}), environ={}) == [
        "state.topic: environment variable NOPE is not set (referenced as ${ENV:NOPE})"]


def test_not_a_mapping() -> None:
    assert config_errors(minimal("yes")) == [
        "state: must be a mapping with keys enabled, topic, checkpoint_interval_s, e.g. "
        "{enabled: true, topic: streamdrift-state, checkpoint_interval_s: 30}; got a string"]


def test_unknown_key_with_suggestion() -> None:
    assert config_errors(minimal({"checkpoint_interval": 5})) == [
        "state.checkpoint_interval: unknown key (did you mean 'checkpoint_interval_s'?); "
        "known keys here: enabled, topic, checkpoint_interval_s"]
    assert config_errors(minimal({"zzz": 1})) == [
        "state.zzz: unknown key; known keys here: enabled, topic, checkpoint_interval_s"]


def test_enabled_must_be_a_boolean() -> None:
    assert config_errors(minimal({"enabled": "yes"})) == [
        "state.enabled: must be true or false, got 'yes'"]
    assert config_errors(minimal({"enabled": 1})) == ["state.enabled: must be true or false, got 1"]


def test_topic_must_be_a_valid_kafka_name() -> None:
    assert config_errors(minimal({"topic": "has space"})) == [
        "state.topic: 'has space' is not a valid Kafka topic name (1-249 characters: letters, "
        "digits, '.', '_', '-')"]
    assert config_errors(minimal({"topic": 5})) == ["state.topic: must be a string, got an integer"]
    assert config_errors(minimal({"topic": ""})) == ["state.topic: must not be empty"]


def test_topic_must_be_its_own() -> None:
    assert config_errors(minimal({"topic": "events"}, kafka=KAFKA)) == [
        "state.topic: 'events' is also in source.kafka.topics; the state topic must be a "
        "topic of its own"]
    assert config_errors(minimal({"topic": "dlq"}, kafka=KAFKA, dead_letter={"topic": "dlq"})) == [
        "state.topic: 'dlq' is also source.dead_letter.topic; the state topic must be a "
        "topic of its own"]


def test_the_default_topic_name_is_checked_too() -> None:
    kafka = {**KAFKA, "topics": ["streamdrift-state"]}
    assert config_errors(minimal(kafka=kafka)) == [
        "state.topic: 'streamdrift-state' is also in source.kafka.topics; the state topic must "
        "be a topic of its own"]
    # no checkpoints, no conflict
    assert parse_config(minimal({"enabled": False}, kafka=kafka), "/").state.enabled is False


def test_interval_must_be_positive_and_finite() -> None:
    for bad, shown in ((0, "must be a number > 0, got 0"),
                       (-1, "must be a number > 0, got -1"),
                       (".inf", "must be a finite number > 0, got '.inf'"),
                       (True, "must be a finite number > 0, got a boolean"),
                       ("soon", "must be a finite number > 0, got 'soon'")):
        assert config_errors(minimal({"checkpoint_interval_s": bad})) == [
            f"state.checkpoint_interval_s: {shown}"], bad


def test_all_problems_at_once_in_file_order() -> None:
    data = minimal({"enabled": "no", "checkpoint_interval_s": 0})
    data["metrics"] = {"port": "x"}
    errors = config_errors(data)
    assert errors == [
        "metrics.port: must be an integer in 0..65535, got 'x'",
        "state.enabled: must be true or false, got 'no'",
        "state.checkpoint_interval_s: must be a number > 0, got 0",
    ]


def test_other_sections_unchanged_by_a_state_section() -> None:
    with_state = parse_config(minimal({"enabled": True}, kafka=KAFKA), "/cfg")
    without = parse_config(minimal(kafka=KAFKA), "/cfg")
    assert dataclasses.replace(with_state, state=StateConfig()) == without
