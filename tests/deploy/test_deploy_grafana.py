"""Grafana provisioning and the generated dashboards."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.promql import check_expr, load_contract

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
RECORDING = REPO / "deploy" / "prometheus" / "rules" / "streamdrift-recording.yml"

EXPECTED_UIDS = {
    "streamdrift-overview.json": "streamdrift-overview",
    "streamdrift-model.json": "streamdrift-model",
    "streamdrift-pipeline.json": "streamdrift-pipeline",
    "streamdrift-model-quality.json": "streamdrift-model-quality",
}
#: Grafana unit ids the dashboards may use (all exist in Grafana's valueFormats).
KNOWN_UNITS = {"none", "short", "s", "percentunit", "eps", "cps", "ops", "wps"}
DATASOURCE_REFS = ({"type": "prometheus", "uid": "${datasource}"},
                   {"type": "prometheus", "uid": "streamdrift-prometheus"})


def generator(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GRAFANA / "generate.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def dashboards() -> dict[str, dict]:
    return {name: json.loads((DASHBOARD_DIR / name).read_text(encoding="utf-8"))
            for name in EXPECTED_UIDS}


def panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows
    return out


def all_exprs(d: dict) -> list[tuple[str, str]]:
    exprs = [(p["title"], t["expr"]) for p in panels(d) for t in p.get("targets", [])]
    exprs += [(f"annotation {a['name']}", a["expr"])
              for a in d["annotations"]["list"] if a.get("expr")]
    return exprs


# --------------------------------------------------------------------------- generator


def test_committed_dashboards_are_up_to_date():
    result = generator("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_detects_stale_missing_and_extra_files(tmp_path):
    for name in EXPECTED_UIDS:
        shutil.copy(DASHBOARD_DIR / name, tmp_path / name)
    assert generator("--check", "--out", str(tmp_path)).returncode == 0

    edited = tmp_path / "streamdrift-model.json"
    edited.write_text(edited.read_text().replace('"Drift score"', '"Edited in the UI"'))
    result = generator("--check", "--out", str(tmp_path))
    assert result.returncode == 1 and "Edited in the UI" in result.stderr

    edited.unlink()
    result = generator("--check", "--out", str(tmp_path))
    assert result.returncode == 1 and "missing" in result.stderr

    assert generator("--out", str(tmp_path)).returncode == 0
    (tmp_path / "old.json").write_text("{}")
    result = generator("--check", "--out", str(tmp_path))
    assert result.returncode == 1 and "old.json" in result.stderr


def test_generation_is_deterministic(grafana_generate):
    first = {n: grafana_generate.render(d) for n, d in grafana_generate.build().items()}
    second = {n: grafana_generate.render(d) for n, d in grafana_generate.build().items()}
    assert first == second


def test_generator_uses_only_the_standard_library():
    source = (GRAFANA / "generate.py").read_text(encoding="utf-8")
    imported = set(re.findall(r"^\s*(?:from|import)\s+(\w+)", source, re.M))
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_iter_queries_covers_every_query(grafana_generate):
    queries = list(grafana_generate.iter_queries())
    expected = 0
    for d in dashboards().values():
        expected += len(all_exprs(d))
        expected += sum(1 for v in d["templating"]["list"] if v["type"] == "query")
    assert len(queries) == expected
    assert all(len(q) == 3 and q.expr for q in queries)
    expanded = grafana_generate.expand_macros(queries[-1].expr, {"model": "m", "feature": "f"})
    assert "$" not in expanded


def test_expand_macros(grafana_generate):
    expand = grafana_generate.expand_macros
    assert expand('rate(x{job="$job", model="${model}"}[$__rate_interval])',
                  {"model": "fraud"}, rate_interval="30s") \
        == 'rate(x{job="streamdrift", model="fraud"}[30s])'
    with pytest.raises(KeyError):
        expand("x{a=\"$unknown\"}")


# --------------------------------------------------------------------------- dashboards


@pytest.mark.parametrize("name", EXPECTED_UIDS)
def test_dashboard_identity(name):
    d = dashboards()[name]
    assert d["uid"] == EXPECTED_UIDS[name]
    assert d["title"].startswith("Streamdrift ")
    assert "streamdrift" in d["tags"]
    assert d.get("id") is None, "provisioned dashboards must not carry a database id"
    datasource = d["templating"]["list"][0]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    assert datasource["current"]["value"] == "streamdrift-prometheus"


@pytest.mark.parametrize("name", EXPECTED_UIDS)
def test_every_panel_has_title_description_unit_and_datasource(name):
    d = dashboards()[name]
    titles, ids = [], []
    for p in panels(d):
        ids.append(p["id"])
        assert p.get("title", "").strip(), p
        assert p.get("description", "").strip(), f"{p['title']}: no description"
        if p["type"] == "row":
            continue
        titles.append(p["title"])
        unit = p["fieldConfig"]["defaults"].get("unit")
        assert unit in KNOWN_UNITS, f"{p['title']}: unit {unit!r}"
        assert p["datasource"] in DATASOURCE_REFS, p["title"]
        assert p["targets"], f"{p['title']}: no query"
        for t in p["targets"]:
            assert t["datasource"] in DATASOURCE_REFS
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    assert len(titles) == len(set(titles)), "duplicate panel titles"


@pytest.mark.parametrize("name", EXPECTED_UIDS)
def test_rates_use_rate_interval(name):
    for title, expr in all_exprs(dashboards()[name]):
        for window in re.findall(r"\[([^\]]*)\]", expr):
            assert window == "$__rate_interval", f"{title}: hard-coded range [{window}]"
        if re.search(r"\b(rate|irate|increase|deriv)\s*\(", expr):
            assert "[$__rate_interval]" in expr, title


@pytest.mark.parametrize("name", EXPECTED_UIDS)
def test_queries_use_documented_metrics_and_labels(name):
    contract = load_contract()
    recorded = {r["record"] for g in yaml.safe_load(RECORDING.read_text())["groups"]
                for r in g["rules"]}
    d = dashboards()[name]
    exprs = all_exprs(d)
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"]
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            assert match, f"variable {var['name']}: {query}"
            exprs.append((f"variable {var['name']}", match[1]))
    problems = [f"{title}: {p}" for title, expr in exprs
                for p in check_expr(expr, contract, recorded)]
    assert not problems, "\n".join(problems)


def test_model_dashboard_variables():
    d = dashboards()["streamdrift-model.json"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert {"datasource", "job", "model", "feature"} <= set(variables)
    for name in ("model", "feature"):
        assert variables[name]["type"] == "query"
        assert variables[name]["query"]["query"].startswith("label_values(")
        assert variables[name]["query"]["query"].endswith(f", {name})")
    assert 'model="$model"' in variables["feature"]["query"]["query"]
    used = " ".join(expr for _, expr in all_exprs(d))
    assert '"$model"' in used and '"$feature"' in used
    # the drill-down shows statistic vs threshold and the predictions' drift
    titles = {p["title"] for p in panels(d)}
    assert {"Statistic vs threshold", "Prediction drift score", "Distances to the baseline",
            "Data-quality ratios"} <= titles


def test_overview_and_pipeline_content():
    overview = " ".join(e for _, e in all_exprs(dashboards()["streamdrift-overview.json"]))
    assert "streamdrift_drift_active" in overview
    assert "increase(streamdrift_drift_alarms_total" in overview
    assert "streamdrift_model_info" in overview
    pipeline = " ".join(e for _, e in all_exprs(dashboards()["streamdrift-pipeline.json"]))
    for needle in ("streamdrift_events_consumed_total", "sum by (reason)",
                   "sum by (topic, partition) (streamdrift_consumer_lag_messages",
                   "histogram_quantile(0.99", "streamdrift_event_lag_seconds",
                   "streamdrift_source_up"):
        assert needle in pipeline, needle


def test_model_quality_dashboard_content():
    """The model-quality dashboard: one labelled model, its realised quality against the
    reference, its model-quality episodes, the estimate and the label feed."""
    d = dashboards()["streamdrift-model-quality.json"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["model"]["query"]["query"] == \
        'label_values(streamdrift_labels_total{job="$job"}, model)'
    assert 'model="$model"' in variables["metric"]["query"]["query"]
    used = " ".join(expr for _, expr in all_exprs(d))
    for needle in ('scope="recent"', 'scope="baseline"', "streamdrift_concept_drift_active",
                   "streamdrift_concept_drift_score", "streamdrift_estimated_quality_lower",
                   "streamdrift_estimated_quality_drop_active", 'outcome="joined"',
                   "streamdrift_last_label_timestamp_seconds",
                   "increase(streamdrift_concept_drift_alarms_total"):
        assert needle in used, needle
    assert all('model="$model"' in expr for title, expr in all_exprs(d)
               if title != "Rejected label messages"), "a panel ignores the model variable"


# --------------------------------------------------------------------------- provisioning


def test_datasource_provisioning():
    doc = yaml.safe_load((GRAFANA / "provisioning/datasources/streamdrift.yml").read_text())
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    assert ds["uid"] == "streamdrift-prometheus"
    assert ds["type"] == "prometheus"
    assert ds["url"] == "http://prometheus:9090"
    # $__rate_interval assumes this matches the scrape interval of prometheus.yml
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "streamdrift")
    assert ds["jsonData"]["timeInterval"] == job.get("scrape_interval",
                                                     prom["global"]["scrape_interval"])


def test_dashboard_provisioning():
    doc = yaml.safe_load((GRAFANA / "provisioning/dashboards/streamdrift.yml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/streamdrift"
