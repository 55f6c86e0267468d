"""Prometheus configuration, recording and alert rules, their promtool unit tests, and the
runbook every alert links to."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.support.policy import in_ci, require_tool
from tests.support.promql import check_expr, load_contract

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_YML = PROM_DIR / "prometheus.yml"
ALERTS = PROM_DIR / "rules" / "streamdrift-alerts.yml"
RECORDING = PROM_DIR / "rules" / "streamdrift-recording.yml"
UNIT_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/streamdrift/streamdrift/blob/main/docs/runbooks.md#"

#: The paging policy: critical pages, warning opens a ticket, the watchdog has none.
EXPECTED_SEVERITIES = {
    "StreamdriftFeatureDrift": {"warning"},
    "StreamdriftPredictionDrift": {"critical"},
    "StreamdriftMultivariateDrift": {"warning"},
    "StreamdriftEmbeddingDrift": {"warning"},  # embedding columns (#19.2)
    "StreamdriftMissingValuesHigh": {"warning"},
    "StreamdriftOutOfRangeValuesHigh": {"warning"},
    "StreamdriftUnseenCategories": {"warning"},
    "StreamdriftInvalidValuesHigh": {"warning"},
    "StreamdriftModelDataQuality": {"warning"},
    "StreamdriftPartitionSkew": {"warning"},
    "StreamdriftSegmentDrift": {"warning"},
    "StreamdriftBiasDrift": {"warning"},  # bias drift (#16.2)
    "StreamdriftAttributionDrift": {"warning"},
    "StreamdriftInvalidEventsHigh": {"warning", "critical"},  # two tiers
    "StreamdriftTargetDown": {"critical"},
    "StreamdriftTargetAbsent": {"critical"},
    "StreamdriftSourceDown": {"critical"},
    "StreamdriftConsumerStalled": {"critical"},
    "StreamdriftConsumerGroupJoinStalled": {"warning"},
    "StreamdriftNoEvents": {"critical"},
    "StreamdriftModelNoEvents": {"critical"},
    "StreamdriftConsumerLagGrowing": {"warning"},
    "StreamdriftProcessingSlowerThanArrival": {"warning"},
    "StreamdriftDeadLetterWritesFailing": {"warning"},
    "StreamdriftPoolOutboxFull": {"warning"},  # source.repartition.pooled (#14)
    "StreamdriftWriterUnaligned": {"warning"},  # source.repartition.writers: several (#14)
    "StreamdriftWatchdog": {"none"},
    # model quality (labels joined to predictions): the realised drop pages, the estimate
    # and the label feed open tickets
    "StreamdriftModelQualityDegraded": {"critical"},
    "StreamdriftEstimatedPerformanceDrop": {"warning"},
    "StreamdriftLabelsStalled": {"warning"},
    "StreamdriftLabelCoverageLow": {"warning"},
}
#: Allowed `for:` per category, in minutes (inclusive). Drift: at most 1m, for the 90 s
#: time-to-page budget (tests/deploy/test_time_to_page_budget.py); drift episodes keep
#: streamdrift_drift_active latched, so no long hold is needed against flapping.
FOR_RANGES = {"drift": (0.25, 1), "quality": (5, 15), "pipeline": (5, 30), "meta": (0, 0)}


def run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def output(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def minutes(duration: str | None) -> float:
    """Prometheus duration (`90s`, `15m`, `1h30m`) in minutes."""
    if not duration:
        return 0
    units = {"ms": 1 / 60000, "s": 1 / 60, "m": 1, "h": 60, "d": 1440, "w": 10080, "y": 525600}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(int(n) * units[u] for n, u in parts)


def load_groups(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]


def alert_rules() -> list[dict]:
    return [r for g in load_groups(ALERTS) for r in g["rules"] if "alert" in r]


def recording_rules() -> list[dict]:
    return [r for g in load_groups(RECORDING) for r in g["rules"] if "record" in r]


def rule_id(rule: dict) -> str:
    return f"{rule['alert']}-{rule['labels']['severity']}"


def unit_test_cases() -> list[tuple[str, int, dict, dict]]:
    """(file name, group index, group, alert_rule_test case) of every promtool test file."""
    cases = []
    for path in UNIT_TESTS:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for gi, group in enumerate(doc.get("tests", [])):
            for case in group.get("alert_rule_test", []) or []:
                cases.append((path.name, gi, group, case))
    return cases


def github_anchor(heading: str) -> str:
    """The anchor GitHub generates for a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """Anchor -> text of every `## ` section of docs/runbooks.md."""
    sections: dict[str, str] = {}
    current = None
    for line in RUNBOOKS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = github_anchor(line[3:])
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


# --------------------------------------------------------------------------- promtool


def test_promtool_check_config():
    promtool = require_tool("promtool")
    result = run([promtool, "check", "config", str(PROMETHEUS_YML)])
    assert result.returncode == 0, output(result)
    assert "2 rule files found" in result.stdout + result.stderr, output(result)


@pytest.mark.parametrize("path", [RECORDING, ALERTS], ids=lambda p: p.name)
def test_promtool_check_rules(path):
    promtool = require_tool("promtool")
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, output(result)


def test_promtool_unit_tests():
    promtool = require_tool("promtool")
    assert UNIT_TESTS, "no promtool unit test files in deploy/prometheus/tests/"
    result = run([promtool, "test", "rules", *map(str, UNIT_TESTS)])
    assert result.returncode == 0, output(result)
    assert "FAILED" not in result.stdout + result.stderr


def _firing_groups(tests: dict, alert: str) -> list[dict]:
    """The groups of a promtool test file in which `alert` is expected to fire somewhere."""
    return [g for g in tests.get("tests", [])
            if any(c["alertname"] == alert and c.get("exp_alerts")
                   for c in g.get("alert_rule_test") or [])]


def _evaluation_step(rule: dict) -> float:
    """The evaluation interval, in minutes, of the unit-test files in which `rule` fires
    (one value: its `for:` boundary is pinned at that resolution)."""
    steps = set()
    for path in UNIT_TESTS:
        tests = yaml.safe_load(path.read_text(encoding="utf-8"))
        if _firing_groups(tests, rule["alert"]):
            steps.add(minutes(tests.get("evaluation_interval", "1m")))
    assert len(steps) == 1, f"{rule['alert']} fires in test files with intervals {steps}"
    return steps.pop()


def _mutated_for(tmp_path: Path, index: int, delta: float) -> subprocess.CompletedProcess:
    """Run the unit-test groups that test the index-th alert rule against a copy of the
    alert rules in which that rule's `for:` is changed by `delta` minutes."""
    promtool = require_tool("promtool")
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    rules = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
    rule = rules[index]
    rule["for"] = f"{round((minutes(rule.get('for')) + delta) * 60)}s"
    mutated = tmp_path / ALERTS.name
    mutated.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    files = []
    for path in UNIT_TESTS:
        tests = yaml.safe_load(path.read_text(encoding="utf-8"))
        groups = _firing_groups(tests, rule["alert"])
        if groups:
            tests["tests"] = groups
            tests["rule_files"] = [str(mutated)]
            files.append(tmp_path / path.name)
            files[-1].write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    assert files, f"no unit test group tests {rule['alert']}"
    return run([promtool, "test", "rules", *map(str, files)])


def _mutations() -> list:
    params = []
    for index, rule in enumerate(alert_rules()):
        step = _evaluation_step(rule)
        for sign in (-1, +1):
            if minutes(rule.get("for")) + sign * step < 0:  # the watchdog has no `for:`
                continue
            seconds = round(sign * step * 60)
            params.append(pytest.param(index, sign * step,
                                       id=f"{rule_id(rule)}-for{seconds:+d}s"))
    return params


@pytest.mark.parametrize(("index", "delta"), _mutations())
def test_unit_tests_pin_every_for_boundary(tmp_path, index, delta):
    """Mutation check: the unit tests fail if any alert's `for:` is one evaluation shorter or
    longer, i.e. each alert is tested firing exactly at its boundary and not just before."""
    rule = alert_rules()[index]
    result = _mutated_for(tmp_path, index, delta)
    assert result.returncode != 0, (
        f"promtool unit tests still pass with `for:` of {rule_id(rule)} changed by "
        f"{delta * 60:+.0f}s:"
        f" the boundary is not pinned\n{output(result)}")
    # ... and they fail because of this alert's expectations, not for another reason.
    assert f"alertname: {rule['alert']}," in result.stdout + result.stderr, output(result)


# --------------------------------------------------------------------------- configuration


def test_prometheus_yml_wiring():
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    rule_files = {(PROMETHEUS_YML.parent / f).resolve() for f in cfg["rule_files"]}
    assert rule_files == {ALERTS.resolve(), RECORDING.resolve()}
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    assert "streamdrift" in jobs
    targets = [t for sc in jobs["streamdrift"]["static_configs"] for t in sc["targets"]]
    assert targets == ["127.0.0.1:9108"]
    am_targets = [t for am in cfg["alerting"]["alertmanagers"]
                  for sc in am["static_configs"] for t in sc["targets"]]
    assert am_targets == ["127.0.0.1:9093"]


def test_rule_expressions_use_documented_metrics():
    contract = load_contract()
    recorded = {r["record"] for r in recording_rules()}
    problems = []
    for rule in alert_rules() + recording_rules():
        name = rule.get("alert") or rule.get("record")
        problems += [f"{name}: {p}" for p in check_expr(rule["expr"], contract, recorded)]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- alert rules


def test_alert_set_matches_paging_policy():
    found = defaultdict(set)
    for rule in alert_rules():
        found[rule["alert"]].add(rule["labels"]["severity"])
    assert dict(found) == EXPECTED_SEVERITIES


def test_alert_names_and_severities_are_unique():
    ids = [rule_id(r) for r in alert_rules()]
    assert len(ids) == len(set(ids)), ids


@pytest.mark.parametrize("rule", alert_rules(), ids=rule_id)
def test_alert_is_well_formed(rule):
    name = rule["alert"]
    assert re.fullmatch(r"Streamdrift[A-Z][A-Za-z]+", name), name
    labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
    severity = labels.get("severity")
    if name == "StreamdriftWatchdog":
        assert severity == "none"
    else:
        assert severity in {"critical", "warning"}
    category = labels.get("category")
    assert category in FOR_RANGES, f"category {category!r}"
    low, high = FOR_RANGES[category]
    if name == "StreamdriftModelDataQuality":  # its inhibition must act before drift pages
        low, high = FOR_RANGES["drift"]
    assert low <= minutes(rule.get("for")) <= high, f"for: {rule.get('for')}"

    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key, "").strip(), f"annotation {key} missing"
    assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower()
    description = annotations["description"]
    if not rule["expr"].lstrip().startswith("absent("):
        assert "$value" in description, "the description should show the value"
    # The left-most aggregation gives the alert its labels (the right-hand sides of
    # and/unless/comparisons do not): model and feature, when kept, must be named.
    first_by = re.search(r"\bby\s*\(([^)]*)\)", rule["expr"])
    kept = {x.strip() for x in first_by[1].split(",")} if first_by else set()
    for label in ("model", "feature"):
        if label in kept:
            assert f"$labels.{label}" in description, f"description lacks $labels.{label}"


def test_absent_alerts_carry_explicit_labels():
    for rule in alert_rules():
        if "absent(" in rule["expr"]:
            assert {"job", "severity", "category"} <= set(rule["labels"]), rule["alert"]


# --------------------------------------------------------------------------- unit-test coverage


def test_every_alert_has_unit_test_cases():
    named = {case["alertname"] for _, _, _, case in unit_test_cases()}
    missing = sorted({r["alert"] for r in alert_rules()} - named)
    assert not missing, f"alerts without a promtool test case: {missing}"


@pytest.mark.parametrize("rule", alert_rules(), ids=rule_id)
def test_alert_is_tested_at_its_for_boundary(rule):
    """Some test group expects the alert (with its severity, labels and all annotations)
    at time t >= for, and expects it absent one evaluation interval earlier."""
    name, severity = rule["alert"], rule["labels"]["severity"]
    hold = minutes(rule.get("for"))
    by_group: dict[tuple[str, int], dict[float, bool]] = defaultdict(dict)
    intervals: dict[tuple[str, int], float] = {}
    for fname, gi, group, case in unit_test_cases():
        if case["alertname"] != name:
            continue
        fires = False
        for exp in case.get("exp_alerts") or []:
            if exp.get("exp_labels", {}).get("severity") != severity:
                continue
            assert set(exp.get("exp_annotations", {})) >= {"summary", "description",
                                                          "runbook_url"}, (fname, case)
            fires = True
        by_group[(fname, gi)][minutes(case["eval_time"])] = fires
        intervals[(fname, gi)] = minutes(group.get("interval", "1m"))
    assert by_group, f"{name} has no test case"
    for key, cases in by_group.items():
        interval = intervals[key]  # each group's own (not the last group's)
        for t, fires in cases.items():
            if not fires or t < hold:
                continue
            if hold == 0 or cases.get(t - interval) is False:
                return
    pytest.fail(f"{name} ({severity}): no test group expects it firing at some t >= for "
                f"({hold}m) and not firing one interval before")


def test_clean_series_never_fire():
    """A test group evaluates every alert but the watchdog several times and expects nothing."""
    expected = {r["alert"] for r in alert_rules()} - {"StreamdriftWatchdog"}
    per_group: dict[tuple[str, int], dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for fname, gi, _, case in unit_test_cases():
        per_group[(fname, gi)][case["alertname"]].append(not case.get("exp_alerts"))
    for checks in per_group.values():
        if all(len(checks.get(a, [])) >= 2 and all(checks[a]) for a in expected):
            return
    pytest.fail("no promtool test group checks that healthy series fire no alert")


# --------------------------------------------------------------------------- recording rules


@pytest.mark.parametrize("rule", recording_rules(), ids=lambda r: r["record"])
def test_recording_rule_naming(rule):
    name = rule["record"]
    match = re.fullmatch(r"([a-z]+(?:_[a-z]+)*):(streamdrift_[a-z0-9_]+):([a-z0-9_]+)", name)
    assert match, f"{name} is not level:metric:operations"
    level, metric = match[1], match[2]
    assert not metric.endswith("_total"), "drop _total from the metric part"
    grouping = set()
    for clause in re.findall(r"\bby\s*\(([^)]*)\)", rule["expr"]):
        grouping |= {x.strip() for x in clause.split(",")}
    for part in level.split("_"):
        assert part in grouping, f"level {level!r}: {part!r} is not aggregated by"


def test_every_recording_rule_has_a_value_test():
    tested = set()
    for path in UNIT_TESTS:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in doc.get("tests", []):
            for case in group.get("promql_expr_test", []) or []:
                if case.get("exp_samples"):
                    tested.add(case["expr"].strip())
    missing = sorted({r["record"] for r in recording_rules()} - tested)
    assert not missing, f"recording rules without promql_expr_test: {missing}"


# --------------------------------------------------------------------------- runbooks


def test_every_alert_has_a_runbook_section():
    sections = runbook_sections()
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in sections, f"docs/runbooks.md has no section #{anchor}"
        text = sections[anchor]
        for part in ("**Meaning.**", "**Impact.**", "**Diagnosis.**", "**Mitigation.**"):
            assert part in text, f"#{anchor} lacks {part}"


def test_runbook_sections_belong_to_alerts():
    alerts = {r["alert"].lower() for r in alert_rules()}
    stale = sorted(a for a in runbook_sections() if a not in alerts)
    assert not stale, f"runbook sections without an alert: {stale}"


# --------------------------------------------------------------------------- the CI policy


def test_missing_tool_fails_in_ci_and_skips_elsewhere(monkeypatch):
    missing = "streamdrift-no-such-tool"
    monkeypatch.setenv("CI", "true")
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_tool(missing)
    monkeypatch.delenv("CI")
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception, match="not found on PATH"):
        require_tool(missing)


def test_the_model_data_quality_alert_fires_no_later_than_the_drift_alerts():
    """It inhibits the model's drift alerts, so it must be evaluated with them (same group,
    before them) and wait no longer than they do."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    drift = next(g for g in groups if any(r.get("alert") == "StreamdriftFeatureDrift"
                                          for r in g["rules"]))
    names = [r.get("alert") for r in drift["rules"]]
    assert names.index("StreamdriftModelDataQuality") < names.index("StreamdriftFeatureDrift")
    fors = {r["alert"]: minutes(r["for"]) for r in drift["rules"]}
    assert fors["StreamdriftModelDataQuality"] <= min(
        fors["StreamdriftFeatureDrift"], fors["StreamdriftPredictionDrift"])

