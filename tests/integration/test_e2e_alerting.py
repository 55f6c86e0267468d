"""End to end with real components: Kafka -> `streamdrift run` -> Prometheus (our rule files)
-> Alertmanager (our routing) -> a webhook receiver in the test; and every Grafana dashboard
query run against that Prometheus.

* `test_every_dashboard_query_returns_data`: every query of grafana/generate.py's
  `iter_queries()` (panels, template variables, annotations), with the template variables
  set to values read from the running system, returns data.
* `test_drift_of_one_feature_notifies_exactly_that_feature`: a 1 sigma mean shift of x1
  after the first few thousand events reaches the `tickets` webhook as exactly one
  StreamdriftFeatureDrift notification for model m1 / feature x1, rendered; the watchdog
  reaches the dead man's switch; nothing else is notified or fires.
* `test_clean_stream_notifies_only_the_watchdog`: the same set-up without drift notifies
  nothing but the watchdog, while the rules are evaluated for 20 s after the last event.

Shortened for the test: scrape/evaluation interval 1 s, every alert `for:` 5 s (in a copy of
the rule file), the Alertmanager's group_wait / group_interval. Not shortened: the range
windows of the rules (e.g. `rate(...[10m])`), so the pipeline alerts only see the
beginning of the stream; see `tests.support.e2e.start_pipeline` for how the set-up keeps
them from firing with `for: 5s` (target up before the first scrape, events flowing before
it, alert rules loaded once the target has been scraped, a steady rate that builds no
consumer lag, a few poison messages spread over thousands of events).
"""

from __future__ import annotations

import itertools
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.support import e2e
from tests.support.events import COLUMNS, MODEL
from tests.support.policy import require_tool
from tests.support.scripts import GRAFANA_GENERATOR, load_script
from tests.support.servers import ALERTMANAGER, PROMETHEUS, finite_values, query_range
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

RATE = 800  # events per second, steady
DRIFT_AFTER = 3000  # at least this many clean events before x1 drifts
CLEAN_TOTAL = 12_000  # events of the clean stream (about what the drift run has seen when
#                      it pages), plus the poison messages
DRIFTED = "x1"
#: Grafana's $__rate_interval for a datasource scraped every second:
#: max($__interval + scrape interval, 4 x scrape interval)
RATE_INTERVAL_S = 4 * e2e.SCRAPE_S
#: after the drift notification, how long the drifted stream keeps flowing and the rules
#: keep being evaluated before the notifications are checked: another alert would need
#: `for` (5 s) + group_wait (1 s) + delivery
SETTLE_S = 10
#: the clean stream is watched this long after its last event was processed and scraped
QUIET_S = 20


def require_tools() -> None:
    require_tool(*PROMETHEUS)
    require_tool(*ALERTMANAGER)


@pytest.fixture(scope="module")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def baseline(e2e_dir: Path, kafka_bootstrap: str):
    """Lazily built baseline file (built once, by the first test that needs it)."""
    built: list[Path] = []

    def get() -> Path:
        if not built:
            built.append(e2e.build_baseline(e2e_dir, kafka_bootstrap))
        return built[0]

    return get


@pytest.fixture(scope="module")
def drift_pipeline(kafka_bootstrap: str, e2e_dir: Path, baseline):
    """Shared by the dashboard and the drift paging tests: x1 drifts after DRIFT_AFTER events
    and the drifted stream keeps flowing until the module ends."""
    lazy = e2e.LazyPipeline(lambda: e2e.start_pipeline(
        "drift", e2e_dir / "drift", kafka_bootstrap, baseline(), rate=RATE, seed=1,
        drift_after=DRIFT_AFTER))
    yield lazy
    lazy.close()


def _wait(pipe, predicate, timeout: float, message: str):
    """Poll `predicate()` until truthy (returned); fail at once when streamdrift or the
    producer died, and with the pipeline's diagnostics after `timeout` seconds."""
    return wait_for(predicate, timeout, message, alive=pipe.check_alive, interval=0.5,
                    details=pipe.diagnostics)


# --------------------------------------------------------------------------- dashboards


def _grafana_regex_escape(value: str) -> str:
    """A value of a multi-value / include-all variable as Grafana writes it into a
    PromQL regex matcher (regex-escaped, backslashes doubled in the string literal)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


@pytest.mark.timeout(200)
def test_every_dashboard_query_returns_data(drift_pipeline):
    require_tools()
    pipe = drift_pipeline.get()
    gen = load_script(GRAFANA_GENERATOR)
    rate_interval = f"{RATE_INTERVAL_S}s"

    # Data worth showing: the drift alarm of x1 scraped, then enough scrapes after it for
    # every rate window and the batch-time histogram quantiles.
    _wait(pipe, lambda: pipe.query(
        f'streamdrift_drift_alarms_total{{feature="{DRIFTED}"}} > 0'), 90,
        "the drift alarm of x1 in Prometheus")
    _wait(pipe, lambda: finite_values(pipe.query(
        "histogram_quantile(0.99, sum by (le) (rate("
        f"streamdrift_batch_processing_seconds_bucket[{rate_interval}])))")), 30,
        "a finite batch-time quantile")
    n_bad = len(e2e.BAD_MESSAGES)
    _wait(pipe, lambda: pipe.query(
        f"sum(streamdrift_events_invalid_total) == {n_bad} and on () "
        f'streamdrift_dead_letter_total{{result="ok"}} == {n_bad}'), 60,
        f"the {n_bad} poison messages rejected and dead-lettered")
    time.sleep(RATE_INTERVAL_S + 1)

    dashboards = {d["uid"]: d for d in gen.build().values()}
    instant = {(uid, p["title"], t["expr"]): bool(t.get("instant"))
               for uid, d in dashboards.items() for p in d["panels"]
               for t in p.get("targets", [])}
    queries = list(gen.iter_queries())
    assert {q.dashboard for q in queries} == set(dashboards)

    # Template variables: values read from the running system, in the dashboard's order.
    choices: dict[str, list[dict[str, str]]] = {}
    seen_values: dict[str, set[str]] = {}
    for uid, d in dashboards.items():
        combos: list[dict[str, str]] = [{"datasource": gen.DATASOURCE_UID}]
        for var in d["templating"]["list"]:
            if var["type"] != "query":
                continue
            match = gen._LABEL_VALUES.match(var["query"]["query"])
            assert match, var["query"]
            label = match["label"]
            expanded = []
            for combo in combos:
                selector = gen.expand_macros(match["selector"], combo)
                values = sorted({s["metric"][label] for s in pipe.query(selector)
                                 if label in s["metric"]})
                if not values and (var["name"] in OPTIONAL_VARIABLES
                                   or _unconfigured(pipe, selector)):
                    values = [UNCONFIGURED]  # its queries are checked by _unconfigured
                assert values, f"{uid}: variable {var['name']} ({selector}) has no value"
                seen_values.setdefault(var["name"], set()).update(
                    v for v in values if v != UNCONFIGURED)
                options = list(values)
                if var.get("multi") or var.get("includeAll"):
                    options = [_grafana_regex_escape(v) for v in values]
                if var.get("includeAll"):
                    options.append(var["allValue"])
                expanded += [{**combo, var["name"]: o} for o in options]
            combos = expanded
        choices[uid] = combos
    assert seen_values["job"] == {"streamdrift"}
    assert seen_values["model"] == {MODEL}
    assert seen_values["feature"] == set(COLUMNS)
    assert seen_values["instance"] == {f"127.0.0.1:{pipe.run.port}"}

    now = time.time()
    no_data: list[str] = []  # failures
    from_range: list[str] = []  # data over the time range, not at its last instant
    not_applicable: list[str] = []  # empty by design for this column (see below)
    query_has_data: dict[tuple, bool] = {}
    unconfigured: set = set()  # queries of features this pipeline does not configure
    checked = 0
    evaluated: set[str] = set()
    for q, combo in itertools.chain.from_iterable(
            ((q, c) for c in choices[q.dashboard]) for q in queries):
        expr = gen.expand_macros(q.expr, combo, rate_interval=rate_interval)
        where = f"{q.dashboard} / {q.panel} / {expr}"
        if where in evaluated:  # a query that does not use every variable of its dashboard
            continue
        evaluated.add(where)
        query_has_data.setdefault(q, False)
        checked += 1
        data = bool(finite_values(pipe.query(expr, at=now)))
        is_range = q.panel.startswith("annotation ") or (
            not q.panel.startswith("variable ")
            and not instant[(q.dashboard, q.panel, q.expr)])
        if not data and is_range and finite_values(query_range(
                pipe.prometheus, expr, pipe.started_wall, now, e2e.SCRAPE_S)):
            # a time-series panel or an annotation shows the dashboard's time range
            from_range.append(where)
            data = True
        if data:
            query_has_data[q] = True
        elif _unconfigured(pipe, expr):
            unconfigured.add(q)
        elif _not_applicable(pipe, expr, combo.get("feature")):
            not_applicable.append(where)
        else:
            no_data.append(where)

    print(f"\n{len(query_has_data)} dashboard queries, {checked} evaluations; data only over "
          f"the time range: {len(from_range)}; not applicable to the column: "
          f"{len(not_applicable)}", *from_range, *not_applicable, sep="\n  ")
    context = ("\n(data only over the time range:\n  " + "\n  ".join(from_range)
               + "\nnot applicable to the column:\n  " + "\n  ".join(not_applicable)
               + ")\n" + pipe.diagnostics())
    assert not no_data, "dashboard queries without data:\n  " + "\n  ".join(no_data) + context
    # Every query has data for some value of the variables (e.g. the unseen ratio for a
    # categorical column, the alarm events for the drifted one).
    assert all(ok for q, ok in query_has_data.items() if q not in unconfigured), \
        [q for q, ok in query_has_data.items() if not ok and q not in unconfigured]
    # Only alarm-event queries (`increase(alarms) > 0`) may lack data at the last instant.
    assert all("streamdrift_drift_alarms_total" in w for w in from_range), from_range


#: metrics of features the e2e pipeline does not configure (segments, multivariate groups,
#: labels and the model quality they give, bias drift, attribution drift and root cause):
#: their panels are checked with data by tests/deploy/test_prometheus_live.py, whose
#: exporter serves them; here they must be absent altogether, not just empty
OPTIONAL_METRICS = ("streamdrift_segment_", "streamdrift_multivariate_",
                    "streamdrift_labels", "streamdrift_model_quality",
                    "streamdrift_concept_drift_", "streamdrift_estimated_quality",
                    "streamdrift_last_label_", "streamdrift_bias_",
                    "streamdrift_attribution_", "streamdrift_root_cause",
                    "streamdrift_vector_")
#: template variables over those metrics (also any variable whose selector reads only them,
#: such as the model-quality dashboard's), and the value their queries get when unset
OPTIONAL_VARIABLES = {"segment"}
UNCONFIGURED = "__unconfigured__"


def _unconfigured(pipe, expr: str) -> bool:
    """Whether an empty query reads only metrics of unconfigured features, which this
    streamdrift does not export at all."""
    metrics = set(re.findall(r"\bstreamdrift_\w+", expr))
    optional = {m for m in metrics if m.startswith(OPTIONAL_METRICS)}
    return bool(optional) and all(not pipe.query(f"count({m})") for m in optional)


def _not_applicable(pipe, expr: str, feature: str | None) -> bool:
    """Whether an empty query on column `feature` is empty by design: a metric of the
    query is not exported for that column (out-of-range ratio of a categorical column,
    unseen ratio of a numeric one), or it counts alarms of a column that never alarmed."""
    if feature is None:
        return False
    for metric in sorted(set(re.findall(r"\bstreamdrift_\w+", expr))):
        exported = pipe.query(f'count({metric}{{model="{MODEL}", feature="{feature}"}})')
        if not exported:
            return True
        if metric == "streamdrift_drift_alarms_total" and feature != DRIFTED:
            total = pipe.query(f'sum({metric}{{model="{MODEL}", feature="{feature}"}})')
            if float(total[0]["value"][1]) == 0:
                return True
    return False


# --------------------------------------------------------------------------- paging


def _timestamp(rfc3339: str) -> float:
    """Seconds since the epoch of a Prometheus API time (RFC 3339, up to nanoseconds)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def _unrendered(text: str) -> bool:
    return "{{" in text or "}}" in text or "<no value>" in text


def _check_watchdog(pipe, notifications, paths: dict[str, str]) -> None:
    dms = [n for n in notifications if n.path == paths["deadmansswitch"]]
    assert dms, "the watchdog did not reach the dead man's switch\n" + pipe.diagnostics()
    for n in dms:
        assert n.payload["receiver"] == "deadmansswitch"
        assert n.alertnames == {"StreamdriftWatchdog"}, n.payload
        for alert in n.payload["alerts"]:
            assert alert["status"] == "firing"
            assert alert["labels"]["severity"] == "none"
            assert alert["annotations"]["runbook_url"].endswith("#streamdriftwatchdog")


def _firing_and_pending(pipe) -> tuple[set[tuple], set[tuple]]:
    """(alertname, feature, category) of every alert Prometheus had firing / pending so
    far."""
    firing, pending = set(), set()
    for m in pipe.alerts_seen():
        key = (m["alertname"], m.get("feature", ""), m.get("category", ""))
        (firing if m["alertstate"] == "firing" else pending).add(key)
    return firing, pending


@pytest.mark.timeout(200)
def test_drift_of_one_feature_notifies_exactly_that_feature(drift_pipeline):
    require_tools()
    pipe = drift_pipeline.get()
    paths = e2e.receiver_paths()
    by_path = {path: name for name, path in paths.items()}

    def drift_notified():
        return [n for n in pipe.webhook.notifications()
                if "StreamdriftFeatureDrift" in n.alertnames]

    (first, *_) = _wait(pipe, drift_notified, 120, "a StreamdriftFeatureDrift notification")
    # The drifted stream keeps flowing and the rules keep being evaluated: a drift alert of
    # another column, or a pipeline or quality alert, would be notified meanwhile.
    time.sleep(SETTLE_S)
    pipe.check_alive()
    notifications = pipe.webhook.notifications()
    firing, pending = _firing_and_pending(pipe)
    diag = pipe.diagnostics()

    # every delivery went to the webhook of the receiver it names
    for n in notifications:
        assert by_path.get(n.path) == n.payload["receiver"], (n.path, n.payload)
    receivers = {n.payload["receiver"] for n in notifications}
    assert receivers == {"deadmansswitch", "tickets"}, diag
    _check_watchdog(pipe, notifications, paths)

    # exactly one ticket: the drift of x1, rendered
    tickets = [n for n in notifications if n.payload["receiver"] == "tickets"]
    assert len(tickets) == 1, diag
    (ticket,) = tickets
    assert ticket is first
    assert pipe.producer.drift_started is not None and ticket.at > pipe.producer.drift_started
    payload = ticket.payload
    assert payload["status"] == "firing"
    assert payload["groupLabels"] == {"alertname": "StreamdriftFeatureDrift",
                                      "model": MODEL}
    (alert,) = payload["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"] == {"alertname": "StreamdriftFeatureDrift", "job": "streamdrift",
                               "model": MODEL, "feature": DRIFTED, "role": "feature",
                               "severity": "warning", "category": "drift"}, alert
    annotations = alert["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert not any(_unrendered(v) for v in annotations.values()), annotations
    assert annotations["summary"] == f"Feature {DRIFTED} of model {MODEL} is drifting"
    assert re.fullmatch(
        rf"[123] distribution/mean detector\(s\) \(ks, adwin, cusum, chi2, surprisal\) on feature {DRIFTED} of "
        rf"model {MODEL} have been alarming for .*", annotations["description"]), annotations
    url = annotations["runbook_url"]
    assert url.endswith("/docs/runbooks.md#streamdriftfeaturedrift"), url
    assert "\n## StreamdriftFeatureDrift\n" in e2e.RUNBOOKS_MD.read_text(encoding="utf-8")

    # Prometheus agrees: the only alerts that ever fired are the watchdog and x1's drift,
    # and no other column's drift or quality alert even went pending.
    assert firing == {("StreamdriftWatchdog", "", "meta"),
                      ("StreamdriftFeatureDrift", DRIFTED, "drift")}, diag
    assert {k for k in pending if k[2] in ("drift", "quality")} <= {
        ("StreamdriftFeatureDrift", DRIFTED, "drift")}, (pending, diag)


@pytest.mark.timeout(150)
def test_clean_stream_notifies_only_the_watchdog(kafka_bootstrap, e2e_dir, baseline,
                                                 drift_pipeline):
    require_tools()
    drift_pipeline.close()  # done with (the tests above): its CPU is not shared any more
    pipe = e2e.start_pipeline("clean", e2e_dir / "clean", kafka_bootstrap, baseline(),
                              rate=RATE, seed=2, total=CLEAN_TOTAL)
    try:
        pipe.producer.join(CLEAN_TOTAL / RATE + 30)
        pipe.producer.check()
        assert not pipe.producer.is_alive(), "the producer did not finish"
        sent = pipe.producer.messages
        assert sent == CLEAN_TOTAL + len(e2e.BAD_MESSAGES)

        def all_scraped():
            got = pipe.query("streamdrift_events_consumed_total")
            return got and float(got[0]["value"][1]) == sent

        _wait(pipe, all_scraped, 60, f"all {sent} messages consumed and scraped")
        done = time.time()
        deadline = time.monotonic() + QUIET_S
        while time.monotonic() < deadline:
            pipe.check_alive()
            time.sleep(1)

        groups = pipe.prometheus.get_json("/api/v1/rules")["data"]["groups"]
        for g in groups:  # evaluated until the end of the quiet period
            assert _timestamp(g["lastEvaluation"]) > done + QUIET_S - 5, g
            assert all(r["health"] == "ok" for r in g["rules"]), g
        invalid = pipe.query("sum(streamdrift_events_invalid_total)")
        assert float(invalid[0]["value"][1]) == len(e2e.BAD_MESSAGES)

        notifications = pipe.webhook.notifications()
        firing, pending = _firing_and_pending(pipe)
        diag = pipe.diagnostics()
        paths = e2e.receiver_paths()
        # The notification path works (the watchdog arrived) and carried nothing else.
        _check_watchdog(pipe, notifications, paths)
        assert {n.payload["receiver"] for n in notifications} == {"deadmansswitch"}, diag
        assert firing == {("StreamdriftWatchdog", "", "meta")}, diag
        assert not {k for k in pending if k[2] in ("drift", "quality")}, pending
    finally:
        pipe.close()
