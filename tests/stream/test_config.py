"""Tests of stream.config: loading, validation, error messages, secrets."""

from __future__ import annotations

import copy
import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest

from detectors.errors import StreamdriftError
from stream.config import (
    CATEGORICAL_DETECTORS,
    NUMERIC_DETECTORS,
    Config,
    ConfigError,
    Secret,
    check_paths,
    load_config,
    parse_config,
    parse_dotted_path,
    require_kafka,
)
from tests.support.configs import config_errors, minimal_config

SAMPLE = """\
source:
  kafka:
    bootstrap_servers: "127.0.0.1:9092"     # string "h:p,h:p" or list
    topics: [inference-events]
    group_id: streamdrift
    auto_offset_reset: latest
    max_poll_records: 2000
    poll_timeout_ms: 500
    client_id: streamdrift
    security_protocol: PLAINTEXT
    sasl_mechanism: null
    sasl_username: null
    sasl_password: null
    ssl_cafile: null
    ssl_certfile: null
    ssl_keyfile: null
    ssl_password: null
    options: {}
  dead_letter:
    topic: streamdrift-dead-letter
  timestamp:
    path: timestamp
    unit: s
  max_message_bytes: 1048576
models:
  - name: credit
    version: "1"
    select: {field: model, equals: credit}
    baseline: {reference: reference.jsonl}
    features:
      - {name: income, path: features.income, type: numeric}
      - name: country
        path: features.country
        type: categorical
        detectors: [chi2, surprisal, missing, unseen]
        min_effect: {chi2: 0.05}
    predictions:
      - {name: score, path: prediction.score, type: numeric}
detection:
  false_alarm_events: 10000000
  window: 1000
  cadence: 50
  numeric_detectors: [ks, adwin, cusum, missing, out_of_range]
  categorical_detectors: [chi2, surprisal, missing, unseen]
  adwin: {clock: 32}
  min_effect: {}
  bins: 32
  top_k: 50
  reservoir_size: 10000
metrics:
  port: 9108
  host: 0.0.0.0
"""


def minimal() -> dict[str, Any]:
    return minimal_config(
        {"name": "income", "path": "features.income", "type": "numeric"},
        {"name": "country", "path": "features.country", "type": "categorical"},
    )


def with_kafka(**kafka: Any) -> dict[str, Any]:
    data = minimal()
    data["source"] = {"kafka": {"bootstrap_servers": "k:9092", "topics": ["t"], **kafka}}
    return data


def write(tmp_path: Path, text: str, name: str = "streamdrift.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------
# valid configurations
# --------------------------------------------------------------------------
def test_sample_parses(tmp_path: Path) -> None:
    path = write(tmp_path, SAMPLE)
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.path == path
    kafka = cfg.source.kafka
    assert kafka is not None
    assert kafka.bootstrap_servers == ("127.0.0.1:9092",)
    assert kafka.topics == ("inference-events",)
    assert kafka.group_id == "streamdrift" and kafka.auto_offset_reset == "latest"
    assert kafka.max_poll_records == 2000 and kafka.poll_timeout_ms == 500
    assert kafka.sasl_password is None and kafka.ssl_cafile is None
    assert dict(kafka.options) == {}
    assert (
        cfg.source.dead_letter is not None
        and cfg.source.dead_letter.topic == "streamdrift-dead-letter"
    )
    assert cfg.source.timestamp is not None
    assert cfg.source.timestamp.path == ("timestamp",) and cfg.source.timestamp.unit == "s"
    assert cfg.source.max_message_bytes == 1_048_576

    (model,) = cfg.models
    assert model.name == "credit" and model.version == "1"
    assert model.select is not None
    assert model.select.field == ("model",) and model.select.equals == "credit"
    assert model.baseline.reference == tmp_path / "reference.jsonl"
    assert model.baseline.file is None and model.baseline.reference_format == "jsonl"
    income, country = model.features
    assert income.path == ("features", "income") and income.type == "numeric"
    assert income.role == "feature" and income.detectors == NUMERIC_DETECTORS
    # the rate tests' default minimum effect, unless configured (RATE_MIN_EFFECT)
    assert dict(income.min_effect) == {"missing": 0.02}
    assert country.detectors == CATEGORICAL_DETECTORS
    assert dict(country.min_effect) == {"chi2": 0.05, "missing": 0.02}
    (score,) = model.predictions
    assert score.role == "prediction" and score.path == ("prediction", "score")
    assert [c.name for c in model.columns] == ["income", "country", "score"]

    det = cfg.detection
    assert det.false_alarm_events == 10_000_000 and det.window == 1000 and det.cadence == 50
    assert (
        det.adwin.clock == 32
        and det.bins == 32
        and det.top_k == 50
        and det.reservoir_size == 10_000
    )
    assert cfg.metrics.port == 9108 and cfg.metrics.host == "0.0.0.0"
    assert cfg.model("credit") is model


def test_defaults_and_optional_source() -> None:
    cfg = parse_config(minimal(), "/cfg")
    assert cfg.path is None
    assert (
        cfg.source.kafka is None and cfg.source.timestamp is None and cfg.source.dead_letter is None
    )
    assert cfg.source.max_message_bytes == 1_048_576
    assert cfg.detection.window == 1000 and cfg.detection.cadence == 50
    assert cfg.metrics.port == 9108
    model = cfg.models[0]
    assert model.select is None and model.version is None and model.predictions == ()
    assert model.baseline.file == Path("/cfg/baseline.json")


def test_model_defaults_apply_to_columns() -> None:
    data = minimal()
    data["detection"] = {
        "numeric_detectors": ["ks", "missing"],
        "categorical_detectors": ["unseen"],
        "min_effect": {"ks": 0.1, "chi2": 0.2, "unseen": 0.01},
    }
    data["models"][0]["features"].append(
        {
            "name": "age",
            "path": "features.age",
            "type": "numeric",
            "detectors": ["adwin", "ks"],
            "min_effect": {"ks": 0.3},
        }
    )
    cfg = parse_config(data, "/cfg")
    income, country, age = cfg.models[0].features
    # detection.min_effect overrides a kind's default (unseen), the others keep theirs
    assert income.detectors == ("ks", "missing")
    assert dict(income.min_effect) == {"ks": 0.1, "missing": 0.02}
    assert country.detectors == ("unseen",) and dict(country.min_effect) == {"unseen": 0.01}
    assert age.detectors == ("adwin", "ks") and dict(age.min_effect) == {"ks": 0.3}


def test_rate_min_effect_default_can_be_lowered_to_zero() -> None:
    data = minimal()
    data["detection"] = {"min_effect": {"out_of_range": 0.05}}
    data["models"][0]["features"][0]["min_effect"] = {"missing": 0}
    cfg = parse_config(data, "/cfg")
    col = cfg.models[0].features[0]
    assert col.type == "numeric"
    assert dict(col.min_effect) == {"missing": 0.0, "out_of_range": 0.05}


def test_bootstrap_servers_forms() -> None:
    for value, expected in [
        ("a:1, b:2", ("a:1", "b:2")),
        (["a:9092", "[::1]:9093"], ("a:9092", "[::1]:9093")),
        ("kafka", ("kafka",)),
    ]:
        cfg = parse_config(with_kafka(bootstrap_servers=value), "/cfg")
        assert cfg.source.kafka is not None and cfg.source.kafka.bootstrap_servers == expected


def test_config_is_frozen() -> None:
    cfg = parse_config(with_kafka(options={"fetch_max_wait_ms": 100}), "/cfg")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.detection.window = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.models[0].features[0].name = "x"  # type: ignore[misc]
    assert isinstance(cfg.models, tuple) and isinstance(cfg.models[0].features, tuple)
    with pytest.raises(TypeError):
        cfg.source.kafka.options["x"] = 1  # type: ignore[index,union-attr]
    with pytest.raises(TypeError):
        cfg.models[0].features[1].min_effect["chi2"] = 1.0  # type: ignore[index]


def test_consumer_kwargs(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "pw").write_text("s3cret\n")
    data = with_kafka(
        bootstrap_servers="a:1,b:2",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="drift",
        sasl_password={"file": "pw"},
        ssl_cafile="ca.pem",
        options={"fetch_max_wait_ms": 100},
    )
    kafka = require_kafka(parse_config(data, tmp_path))
    kw = kafka.consumer_kwargs()
    assert kw["bootstrap_servers"] == ["a:1", "b:2"]
    assert kw["sasl_plain_username"] == "drift" and kw["sasl_plain_password"] == "s3cret"
    assert kw["ssl_cafile"] == str(tmp_path / "ca.pem") and kw["fetch_max_wait_ms"] == 100
    assert "poll_timeout_ms" not in kw


def test_relative_paths_resolve_against_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    (conf_dir / "certs").mkdir(parents=True)
    (conf_dir / "certs" / "ca.pem").write_text("ca")
    path = write(
        conf_dir,
        """\
        source:
          kafka:
            bootstrap_servers: k:9092
            topics: [t]
            security_protocol: SSL
            ssl_cafile: certs/ca.pem
        models:
          - name: m
            baseline: {reference: data/ref.csv}
            features: [{name: x, path: x, type: numeric}]
          - name: n
            baseline: {file: ../baselines/n.json}
            features: [{name: x, path: x, type: numeric}]
        """,
    )
    monkeypatch.chdir(tmp_path)  # elsewhere: must not matter
    cfg = load_config(path)
    assert (
        cfg.source.kafka is not None
        and cfg.source.kafka.ssl_cafile == conf_dir / "certs" / "ca.pem"
    )
    assert cfg.models[0].baseline.reference == conf_dir / "data" / "ref.csv"
    assert cfg.models[0].baseline.reference_format == "csv"
    assert cfg.models[1].baseline.file == conf_dir / ".." / "baselines" / "n.json"
    # relative file name given to load_config
    monkeypatch.chdir(conf_dir)
    assert (
        load_config("streamdrift.yaml").models[0].baseline.reference
        == conf_dir / "data" / "ref.csv"
    )


def test_dotted_paths() -> None:
    assert parse_dotted_path("a") == ("a",)
    assert parse_dotted_path("a.b.c") == ("a", "b", "c")
    assert parse_dotted_path(r"f.rate\.pct") == ("f", "rate.pct")
    assert parse_dotted_path(r"a\\.b") == ("a\\", "b")
    for bad in ["", ".a", "a.", "a..b", r"a\b", "a\\"]:
        with pytest.raises(ValueError):
            parse_dotted_path(bad)
    data = minimal()
    data["models"][0]["features"][0]["path"] = r"features.income\.usd"
    assert parse_config(data, "/").models[0].features[0].path == ("features", "income.usd")


def test_numbers_from_strings_and_env() -> None:
    data = minimal()
    data["detection"] = {"false_alarm_events": "1e7", "window": "${ENV:WINDOW}"}
    data["metrics"] = {"port": "${ENV:PORT}"}
    cfg = parse_config(data, "/", environ={"WINDOW": "2000", "PORT": "9200"})
    assert cfg.detection.false_alarm_events == 1e7
    assert cfg.detection.window == 2000 and cfg.metrics.port == 9200


# --------------------------------------------------------------------------
# errors name their key
# --------------------------------------------------------------------------
def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    node: Any = data
    keys: list[Any] = [int(k) if k.isdigit() else k for k in dotted.split("/")]
    for key in keys[:-1]:
        if isinstance(node, dict) and key not in node:
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value
    return data


ERROR_CASES = [
    # (key to set, value, key path expected in the message, hint expected)
    (
        "models/0/features/0/type",
        "numerc",
        "models[0].features[0].type:",
        "must be one of numeric, categorical",
    ),
    (
        "models/0/features/1/detectors",
        ["ks"],
        "models[0].features[1].detectors[0]:",
        "ks is a numeric detector",
    ),
    (
        "models/0/features/0/detectors",
        ["chi2"],
        "models[0].features[0].detectors[0]:",
        "numeric columns take ks",
    ),
    (
        "models/0/features/0/detectors",
        ["kss"],
        "models[0].features[0].detectors[0]:",
        "did you mean 'ks'",
    ),
    (
        "models/0/features/0/detectors",
        ["ks", "ks"],
        "models[0].features[0].detectors[1]:",
        "listed twice",
    ),
    ("models/0/features/0/path", "a..b", "models[0].features[0].path:", "empty segment"),
    ("models/0/features/0/path", 3, "models[0].features[0].path:", "dotted key path"),
    ("models/0/features/0/min_effect", {"ks": -1}, "models[0].features[0].min_effect.ks:", ">= 0"),
    (
        "models/0/features/0/min_effect",
        {"chi2": 0.1},
        "models[0].features[0].min_effect.chi2:",
        "not enabled",
    ),
    ("models/0/features/1/name", "income", "models[0].features[1].name:", "duplicate column name"),
    (
        "models/0/predictions",
        [{"name": "income", "path": "p", "type": "numeric"}],
        "models[0].predictions[0].name:",
        "duplicate column name",
    ),
    ("models/0/name", "1credit", "models[0].name:", "not a valid model name"),
    ("models/0/name", "credit-v2", "models[0].name:", "letters, digits and underscores"),
    ("models/0/version", 1, "models[0].version:", 'quote it, e.g. version: "1"'),
    (
        "models/0/select",
        {"field": "model", "equals": 1.5},
        "models[0].select.equals:",
        "string, integer or boolean",
    ),
    ("models/0/select", {"equals": "x"}, "models[0].select.field:", "required"),
    (
        "models/0/baseline",
        {"reference": "r.jsonl", "file": "b.json"},
        "models[0].baseline:",
        "exactly one",
    ),
    ("models/0/baseline", {}, "models[0].baseline:", "exactly one"),
    ("models/0/baseline", {"reference": "r.json"}, "models[0].baseline.reference:", ".jsonl"),
    ("models/0/features", [], "models[0].features:", "non-empty list"),
    ("models/0/features", {"name": "x"}, "models[0].features:", "must be a list"),
    ("models", [], "models:", "non-empty list"),
    ("detection/window", 10, "detection.window:", "in 50..1000000"),
    ("detection/cadence", 300, "detection.cadence:", "multiple of cadence"),
    ("detection/cadence", 2000, "detection.cadence:", "in 1..1000"),
    ("detection/false_alarm_events", 0, "detection.false_alarm_events:", "> 0"),
    ("detection/bins", 300, "detection.bins:", "in 4..256"),
    ("detection/top_k", 1, "detection.top_k:", "in 2..10000"),
    ("detection/reservoir_size", 5.5, "detection.reservoir_size:", "must be an integer"),
    ("detection/adwin", {"clock": 0}, "detection.adwin.clock:", ">= 1"),
    (
        "detection/numeric_detectors",
        ["unseen"],
        "detection.numeric_detectors[0]:",
        "categorical detector",
    ),
    ("detection/min_effect", {"kss": 0.1}, "detection.min_effect.kss:", "did you mean 'ks'"),
    ("detection/min_effect", {"ks": float("nan")}, "detection.min_effect.ks:", "finite number"),
    ("metrics/port", 70000, "metrics.port:", "in 0..65535"),
    ("metrics/port", True, "metrics.port:", "must be an integer"),
    ("metrics/host", "", "metrics.host:", "must not be empty"),
    ("source/max_message_bytes", 0, "source.max_message_bytes:", "integer"),
    (
        "source/timestamp",
        {"unit": "sec"},
        "source.timestamp.unit:",
        "must be one of s, ms, us, iso8601",
    ),
    ("source/timestamp", {"path": ""}, "source.timestamp.path:", "empty segment"),
    (
        "source/dead_letter",
        {"topic": "bad topic"},
        "source.dead_letter.topic:",
        "not a valid Kafka topic",
    ),
    ("source/kafka", {"topics": ["t"]}, "source.kafka.bootstrap_servers:", "required"),
    ("source/kafka", {"bootstrap_servers": "k:1"}, "source.kafka.topics:", "required"),
    (
        "source/kafka",
        {"bootstrap_servers": "k:1", "topics": "t"},
        "source.kafka.topics:",
        "non-empty list",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": "k:99999", "topics": ["t"]},
        "source.kafka.bootstrap_servers:",
        "not a valid host:port",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": ["k:1", 5], "topics": ["t"]},
        "source.kafka.bootstrap_servers[1]:",
        "host:port",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": "k:1", "topics": ["t"], "auto_offset_reset": "begin"},
        "source.kafka.auto_offset_reset:",
        "earliest, latest",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": "k:1", "topics": ["t"], "max_poll_records": 0},
        "source.kafka.max_poll_records:",
        "1..100000",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": "k:1", "topics": ["t"], "security_protocol": "SASL_SSL"},
        "source.kafka.sasl_mechanism:",
        "required with security_protocol SASL_SSL",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": "k:1", "topics": ["t"], "sasl_username": "u"},
        "source.kafka.sasl_username:",
        "only used with SASL",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": "k:1", "topics": ["t"], "ssl_cafile": "/nonexistent/ca.pem"},
        "source.kafka.ssl_cafile:",
        "file not found",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": "k:1", "topics": ["t"], "options": {"group_id": "x"}},
        "source.kafka.options.group_id:",
        "set source.kafka.group_id instead",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": "k:1", "topics": ["t"], "options": [1]},
        "source.kafka.options:",
        "must be a mapping",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": "k:1", "topics": ["t"], "client": "librdkafka"},
        "source.kafka.client:",
        "must be one of kafka-python, confluent-kafka",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": "k:1", "topics": ["t"], "librdkafka": {"fetch.wait.max.ms": 5}},
        "source.kafka.librdkafka:",
        "applies only with client: confluent-kafka",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": "k:1", "topics": ["t"], "client": "confluent-kafka",
         "librdkafka": {"group.id": "x"}},
        "source.kafka.librdkafka['group.id']:",
        "set source.kafka.group_id instead",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": "k:1", "topics": ["t"], "client": "confluent-kafka",
         "librdkafka": {"fetch.wait.max.ms": [1]}},
        "source.kafka.librdkafka['fetch.wait.max.ms']:",
        "must be a string, number or boolean",
    ),
    (
        "source/kafka",
        {"bootstrap_servers": "k:1", "topics": ["t"], "client": "confluent-kafka",
         "options": {"fetch_min_bytes": 1}},
        "source.kafka.options:",
        "use source.kafka.librdkafka",
    ),
    ("source", [], "source:", "must be a mapping"),
]


def test_confluent_client_settings(tmp_path: Path) -> None:
    from stream.sources.confluent import librdkafka_config

    (tmp_path / "ca.pem").write_text("x")
    data = with_kafka(bootstrap_servers="a:1,b:2", security_protocol="SASL_SSL",
                      sasl_mechanism="SCRAM-SHA-256", sasl_username="drift",
                      sasl_password="s3cret", ssl_cafile="ca.pem", client="confluent-kafka",
                      group_id="g", librdkafka={"fetch.wait.max.ms": 20})
    kafka = require_kafka(parse_config(data, tmp_path))
    assert kafka.client == "confluent-kafka"
    conf = librdkafka_config(kafka, 5_000_000)
    assert conf["bootstrap.servers"] == "a:1,b:2" and conf["group.id"] == "g"
    assert conf["security.protocol"] == "sasl_ssl" and conf["sasl.mechanism"] == "SCRAM-SHA-256"
    assert conf["sasl.username"] == "drift" and conf["sasl.password"] == "s3cret"
    assert conf["ssl.ca.location"] == str(tmp_path / "ca.pem")
    assert conf["enable.auto.commit"] is False and conf["enable.auto.offset.store"] is False
    assert conf["max.partition.fetch.bytes"] == 5_000_000 and conf["fetch.wait.max.ms"] == 20
    assert require_kafka(parse_config(with_kafka(), tmp_path)).client == "kafka-python"


def test_confluent_client_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "confluent_kafka" else real(name, *a))
    errors = config_errors(with_kafka(client="confluent-kafka"))
    assert any(e.startswith("source.kafka.client:") and "pip install 'streamdrift[confluent]'"
               in e for e in errors), errors


@pytest.mark.parametrize(
    ("key", "value", "where", "hint"), ERROR_CASES, ids=[c[2] + c[3] for c in ERROR_CASES]
)
def test_error_names_key_path(key: str, value: Any, where: str, hint: str) -> None:
    data = _set(minimal(), key, copy.deepcopy(value))
    errors = config_errors(data)
    matching = [e for e in errors if e.startswith(where)]
    assert matching, errors
    assert any(hint in e for e in matching), errors


def test_config_error_is_a_streamdrift_error() -> None:
    with pytest.raises(StreamdriftError):
        parse_config({"models": []}, "/")


def test_several_errors_reported_together() -> None:
    data = minimal()
    data["models"][0]["features"][0]["type"] = "number"
    data["models"][0]["features"][1]["path"] = ""
    data["detection"] = {"window": 10, "bins": 1}
    data["metrics"] = {"port": -1}
    with pytest.raises(ConfigError) as info:
        parse_config(data, "/")
    exc = info.value
    assert len(exc.errors) == 5
    lines = str(exc).splitlines()
    assert lines[0] == "invalid configuration (5 errors):"
    assert [line.strip() for line in lines[1:]] == list(exc.errors)
    # in the order of the file's sections
    assert [e.split(":")[0].split(".")[0].split("[")[0] for e in exc.errors] == [
        "models",
        "models",
        "detection",
        "detection",
        "metrics",
    ]


def test_unknown_keys_with_suggestions() -> None:
    data = minimal()
    data["detecton"] = {}
    data["models"][0]["fetures"] = []
    data["models"][0]["features"][0]["detector"] = ["ks"]
    data["metrics"] = {"prot": 1, "zzz": 2}
    errors = config_errors(data)
    assert any(e.startswith("detecton: unknown key (did you mean 'detection'?)") for e in errors), (
        errors
    )
    assert any(
        e.startswith("models[0].fetures: unknown key (did you mean 'features'?)") for e in errors
    )
    assert any(
        e.startswith("models[0].features[0].detector: unknown key (did you mean 'detectors'?)")
        for e in errors
    )
    assert any(e.startswith("metrics.prot: unknown key (did you mean 'port'?)") for e in errors)
    zzz = [e for e in errors if e.startswith("metrics.zzz")]
    assert zzz and "did you mean" not in zzz[0] and "known keys here: port, host" in zzz[0]


def test_non_string_unknown_key() -> None:
    data = minimal()
    data[3] = "x"
    assert any(e.startswith("[3]: unknown key") for e in config_errors(data))


# --------------------------------------------------------------------------
# environment variables and secrets
# --------------------------------------------------------------------------
def test_env_substitution() -> None:
    data = with_kafka(group_id="${ENV:GROUP}", topics=["${ENV:TOPIC}", "fixed"])
    data["models"][0]["select"] = {"field": "model", "equals": "${ENV:MODEL}"}
    cfg = parse_config(data, "/", environ={"GROUP": "g1", "TOPIC": "events", "MODEL": "credit"})
    assert cfg.source.kafka is not None
    assert cfg.source.kafka.group_id == "g1" and cfg.source.kafka.topics == ("events", "fixed")
    assert cfg.models[0].select is not None and cfg.models[0].select.equals == "credit"


def test_env_unset_names_key_and_variable() -> None:
    errors = config_errors(with_kafka(group_id="${ENV:NOPE_GROUP}"), environ={})
    assert errors == [
        "source.kafka.group_id: environment variable NOPE_GROUP is not set (referenced as ${ENV:NOPE_GROUP})"
    ]


def test_env_must_be_whole_value() -> None:
    errors = config_errors(with_kafka(group_id="prefix-${ENV:X}"), environ={"X": "1"})
    assert len(errors) == 1 and errors[0].startswith(
        "source.kafka.group_id: ${ENV:NAME} must be the whole value"
    )


def test_env_reads_only_given_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SD_TEST_GROUP", "from-os")
    cfg = parse_config(with_kafka(group_id="${ENV:SD_TEST_GROUP}"), "/")
    assert cfg.source.kafka is not None and cfg.source.kafka.group_id == "from-os"


def sasl(**kw: Any) -> dict[str, Any]:
    return with_kafka(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", **kw
    )


def test_secret_from_env_and_literal() -> None:
    cfg = parse_config(sasl(sasl_password="${ENV:PW}"), "/", environ={"PW": "hunter2"})
    kafka = require_kafka(cfg)
    assert isinstance(kafka.sasl_password, Secret) and kafka.sasl_password.reveal() == "hunter2"
    cfg2 = parse_config(sasl(sasl_password="hunter2"), "/")
    assert cfg2.source.kafka is not None and cfg2.source.kafka.sasl_password == kafka.sasl_password


def test_secret_from_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "kafka").write_text("hunter2\n")
    path = write(
        tmp_path,
        """\
        source:
          kafka:
            bootstrap_servers: k:9092
            topics: [t]
            security_protocol: SASL_PLAINTEXT
            sasl_mechanism: SCRAM-SHA-256
            sasl_username: u
            sasl_password: {file: secrets/kafka}
        models:
          - {name: m, baseline: {file: b.json}, features: [{name: x, path: x, type: numeric}]}
        """,
    )
    kafka = require_kafka(load_config(path))
    assert kafka.sasl_password is not None and kafka.sasl_password.reveal() == "hunter2"


def test_secret_file_errors(tmp_path: Path) -> None:
    errors = config_errors(sasl(sasl_password={"file": "missing"}), tmp_path)
    assert errors == [
        f"source.kafka.sasl_password.file: secret file not found: {tmp_path / 'missing'}"
    ]
    errors = config_errors(sasl(sasl_password={"path": "x"}), tmp_path)
    assert any(e.startswith("source.kafka.sasl_password.path: unknown key") for e in errors)
    errors = config_errors(sasl(sasl_password=12345), tmp_path)
    assert errors == [
        "source.kafka.sasl_password: must be a string, ${ENV:NAME} or {file: PATH}, got an integer"
    ]


def test_secrets_never_shown(tmp_path: Path) -> None:
    secret = "hunter2-very-secret"
    (tmp_path / "pw").write_text(secret)
    data = sasl(sasl_password=secret)
    data["source"]["kafka"]["security_protocol"] = "SASL_SSL"
    data["source"]["kafka"]["ssl_password"] = {"file": "pw"}
    cfg = parse_config(data, tmp_path)
    assert secret not in repr(cfg) and secret not in str(cfg)
    assert "Secret('***')" in repr(cfg)
    assert repr(Secret(secret)) == "Secret('***')" and secret not in f"{Secret(secret)}"

    # an error elsewhere: the message holds no secret
    data["metrics"] = {"port": "x"}
    errors = config_errors(data, tmp_path)
    assert all(secret not in e for e in errors)
    # a secret under a key where it is not allowed, or misspelt
    bad = with_kafka(sasl_password=secret, sasl_pasword=secret)
    with pytest.raises(ConfigError) as info:
        parse_config(bad, tmp_path)
    assert secret not in str(info.value)
    # env form errors do not quote the value either
    with pytest.raises(ConfigError) as info:
        parse_config(sasl(sasl_password=f"{secret}${{ENV:X}}"), tmp_path, environ={"X": "1"})
    assert secret not in str(info.value)


def test_yaml_error_does_not_quote_lines(tmp_path: Path) -> None:
    path = write(tmp_path, 'source:\n  kafka:\n    sasl_password: "hunter2-very-secret\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "not valid YAML" in message and "line " in message
    assert "hunter2" not in message


# --------------------------------------------------------------------------
# load_config file problems
# --------------------------------------------------------------------------
def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found") as info:
        load_config(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(info.value)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("models: [\n", "not valid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("just a string\n", "top level must be a mapping"),
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
        ("metrics:\n  port: 1\n  port: 2\n", "duplicate key 'port'"),
        ("\tmodels: []\n", "not valid YAML"),
    ],
)
def test_load_not_a_config(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_load_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"models: \xff\xfe\x00\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "models: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"invalid configuration {path}: models: ")
    assert info.value.source == str(path)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        x-col: &num {type: numeric}
        models:
          - name: m
            baseline: {file: b.json}
            features:
              - {<<: *num, name: a, path: a}
        """,
    )
    with pytest.raises(ConfigError) as info:  # x-col is an unknown top-level key
        load_config(path)
    assert info.value.errors == (
        "x-col: unknown key; known keys here: source, models, detection, metrics",
    )


def test_parse_config_requires_mapping() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_config([], "/")  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# check_paths / require_kafka
# --------------------------------------------------------------------------
def test_check_paths(tmp_path: Path) -> None:
    data = minimal()
    data["models"].append(
        {
            "name": "other",
            "baseline": {"reference": "ref.jsonl"},
            "features": [{"name": "x", "path": "x", "type": "numeric"}],
        }
    )
    cfg = parse_config(data, tmp_path)
    errors = check_paths(cfg)
    assert len(errors) == 2
    assert (
        errors[0].startswith("models[0].baseline.file: file not found")
        and "streamdrift baseline" in errors[0]
    )
    assert errors[1].startswith("models[1].baseline.reference: file not found")
    assert check_paths(cfg, files=False) == errors[1:]
    assert check_paths(cfg, references=False) == errors[:1]
    (tmp_path / "baseline.json").write_text("{}")
    (tmp_path / "ref.jsonl").mkdir()
    assert check_paths(cfg) == [
        f"models[1].baseline.reference: not a regular file: {tmp_path / 'ref.jsonl'}"
    ]


def test_require_kafka() -> None:
    cfg = parse_config(minimal(), "/")
    with pytest.raises(ConfigError, match=r"source\.kafka: required by `streamdrift run`"):
        require_kafka(cfg)
    kafka = require_kafka(parse_config(with_kafka(), "/"))
    assert kafka.topics == ("t",)
