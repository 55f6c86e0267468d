"""The HTML back-test report (``streamdrift report``, issue #18).

The end-to-end tests run the CLI once (module fixture, ~15 s: the two baselines are
calibrated from their references) on the fixed input of the pinned-behaviour test
(``tests/stream/pinned``: two models, a mean shift of ``credit.income`` at ~8,000, a
share change of ``fraud.merchant`` at ~16,000, ``credit.age`` missing 30 % at ~23,000,
malformed lines), with every what-if scenario injected from line 2,000, and then load
the page in a real headless Chromium (tests/support/browser.py).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors.profile import CategoricalProfile, NumericProfile
from stream.cli import main as streamdrift_main
from stream.report.build import estimate_lines
from stream.report.inject import KINDS, alter, parse_inject
from stream.report.series import SeriesBlock
from tests.support.browser import load_page

PINNED = Path(__file__).resolve().parent / "pinned"
WITHIN = 1000


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("report")
    shutil.copy(PINNED / "config.yaml", work / "config.yaml")
    for name in ("events", "reference-credit", "reference-fraud"):
        with gzip.open(PINNED / f"{name}.jsonl.gz", "rb") as src:
            (work / f"{name}.jsonl").write_bytes(src.read())
    html, js = work / "report.html", work / "report.json"
    code = streamdrift_main(["--log-level", "warning", "report", "-c", str(work / "config.yaml"),
                             "--input", str(work / "events.jsonl"), "--html", str(html),
                             "--json", str(js), "--inject", "--inject-at", "2000,14000",
                             "--within", str(WITHIN), "--share-category", "merchant=travel",
                             "--no-progress"])
    assert code == 0
    return {"work": work, "html": html, "page": html.read_text(),
            "report": json.loads(js.read_bytes())}


# -- the page and its JSON ---------------------------------------------------------------
def test_the_report_replays_as_replay_does(made: dict[str, Any]) -> None:
    # the observer changes nothing: same detections and episodes as the pinned replay
    # (which ran with batches of 5,000 lines; the report with ~100)
    expected = json.loads((PINNED / "expected_report.json").read_text())
    rep = made["report"]
    assert rep["detections"] == expected["detections"]
    # a prediction episode's root cause reads the features' drift scores at the end of the
    # batch in which it opened (docs/attribution.md), so its figures follow the batch size:
    # the same episodes, the same features named first
    def episodes(report: dict[str, Any]) -> list[dict[str, Any]]:
        return [{**e, "root_cause": [c["feature"] for c in e["root_cause"]][:1]}
                if "root_cause" in e else e for e in report["episodes"]]

    assert episodes(rep) == episodes(expected)
    assert rep["events_invalid"] == expected["events_invalid"]


def test_the_page_needs_no_network(made: dict[str, Any]) -> None:
    page = made["page"]
    assert not re.search(r"<(link|img|iframe|object|embed)\b", page)
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "@import" not in page and "url(" not in page
    # the only absolute URL is the SVG namespace, which is a name, not a fetch
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}


def test_the_page_shows_every_part(made: dict[str, Any]) -> None:
    page = made["page"]
    rep = made["report"]
    for model, m in rep["models"].items():
        assert f'id="m-{model}"' in page
        for col in m["features"]:
            assert f'id="c-{model}-{col}"' in page, col
    # a timeline per model, a score chart with its threshold line per column
    assert page.count("aria-label=\"Drift episodes over the input") == 2
    n_cols = sum(len(m["features"]) for m in rep["models"].values())
    assert page.count('class="threshold"') == n_cols
    # a window at the peak of every episode: histogram or category bars
    assert page.count("window at ") >= len(rep["episodes"]) == 4
    assert "<h3>Data quality</h3>" in page and "age missing" in page
    # the summary table, most severe first: credit.age's missing-value episode (19.7)
    table = page[page.index('id="summary-table"'):page.index("</table>",
                                                              page.index('id="summary-table"'))]
    first_row = table[table.index("<tbody>"):].split("</tr>")[0]
    assert ">age<" in first_row
    assert page.count("What if: injected drifts") == 2


def test_what_if_results(made: dict[str, Any]) -> None:
    w = made["report"]["what_if"]
    assert set(w) == {"credit", "fraud"}
    assert [p["at_line"] for p in w["credit"]["positions"]] == [2000, 14000]  # batch ends
    credit = w["credit"]["positions"][0]["columns"]
    # the history's own drift of income (~line 8,000) is seen without injection, so
    # income's delays are only those before it
    ctrl = credit["income"]["alarm_without_injection"]
    assert ctrl is not None and 2000 < ctrl["delay"] < 5 * WITHIN
    for sc in credit["income"]["scenarios"].values():
        assert all(d["delay"] is None or d["delay"] < ctrl["delay"] for d in sc["delays"])
    # age is clean after line 2,000 until its missing values at ~23,000: no control alarm;
    # a larger mean shift is seen sooner, 2 sd within a window's worth of events
    age = credit["age"]
    assert age["alarm_without_injection"] is None
    mean = {d["magnitude"]: d["delay"] for d in age["scenarios"]["mean"]["delays"]}
    assert mean[2.0] is not None and mean[2.0] <= 200
    assert mean[0.5] is not None and mean[2.0] <= mean[0.5]
    assert age["scenarios"]["mean"]["smallest_within"] <= 0.5
    miss = {d["magnitude"]: d["delay"] for d in age["scenarios"]["missing"]["delays"]}
    assert miss[0.2] is not None and miss[0.2] <= miss[0.02] if miss[0.02] else True
    # scenarios apply by type: categorical columns get share and missing only
    merchant = w["fraud"]["positions"][0]["columns"]["merchant"]["scenarios"]
    assert set(merchant) == {"share", "missing"}
    # --share-category merchant=travel (5 % in the reference); label: its most frequent
    assert merchant["share"]["target"] == "travel"
    label = w["fraud"]["positions"][0]["columns"]["label"]["scenarios"]["share"]
    assert label["target"] == "ok"
    share = {d["magnitude"]: d["delay"] for d in merchant["share"]["delays"]}
    assert share[0.2] is not None and share[0.2] <= WITHIN
    # from line 14,000 the history's own merchant drift (~16,000) is seen without injection
    later = w["fraud"]["positions"][1]["columns"]["merchant"]["alarm_without_injection"]
    assert later is not None and later["delay"] < 5 * WITHIN
    # the summary: medians over both positions (a delay not seen counts as infinite)
    summ = w["credit"]["summary"]["age"]["mean"]
    rows = {r["magnitude"]: r for r in summ["delays"]}
    assert rows[2.0]["seen"] == rows[2.0]["positions"] == 2
    assert rows[2.0]["fastest"] <= rows[2.0]["median_delay"] <= rows[2.0]["slowest"] <= 200
    assert summ["smallest_within"] is not None and summ["smallest_within"] <= 0.5


def test_replay_html_and_short_inputs(made: dict[str, Any]) -> None:
    # the baselines are cached beside the configuration by the fixture's run: ~2 s each
    work = made["work"]
    short = work / "short.jsonl"
    short.write_bytes(b"".join((work / "events.jsonl").read_bytes().splitlines(True)[:300]))
    code = streamdrift_main(["--log-level", "warning", "replay", "-c",
                             str(work / "config.yaml"), "--input", str(short), "--report",
                             str(work / "short.json"), "--html", str(work / "short.html"),
                             "--no-progress"])
    assert code == 0
    assert json.loads((work / "short.json").read_bytes())["input_lines"] == 300
    assert "Drift episodes over the input" in (work / "short.html").read_text()
    empty = work / "empty.jsonl"
    empty.write_bytes(b"")
    code = streamdrift_main(["--log-level", "warning", "report", "-c",
                             str(work / "config.yaml"), "--input", str(empty), "--html",
                             str(work / "empty.html"), "--json", str(work / "empty.json"),
                             "--inject", "--no-progress"])
    assert code == 0
    rep = json.loads((work / "empty.json").read_bytes())
    assert rep["input_lines"] == 0 and rep["what_if"] == {}
    assert "the input has only 0 lines" in rep["what_if_skipped"]
    assert "No what-if scenario ran" in (work / "empty.html").read_text()


# -- in a real browser ---------------------------------------------------------------
CHECKS = [
    # every chart drawn with a size, and inside the page's width
    """Array.from(document.querySelectorAll('svg')).map(function (s) {
         var r = s.getBoundingClientRect(); return [r.width, r.height, r.right]; })""",
    "document.querySelectorAll('img').length",
    # sorting: click 'column' (ascending after descending), then read the first column
    """(function () { var th = document.querySelectorAll('#summary-table th')[1];
         th.click(); th.click();
         return document.querySelector('#summary-table tbody tr').cells[1].textContent; })()""",
]


def test_the_page_in_headless_chromium(made: dict[str, Any]) -> None:
    from PIL import Image

    run = load_page(made["html"], CHECKS)
    assert run.errors == [], run.errors
    # nothing but the page itself is fetched
    assert run.requests == [made["html"].resolve().as_uri()]
    sizes, images, first_sorted = run.values
    assert len(sizes) >= 15
    assert all(w > 100 and h > 50 and right <= 1280 for w, h, right in sizes), sizes
    assert images == 0
    cols = sorted(c for m in made["report"]["models"].values() for c in m["features"])
    assert first_sorted == cols[0]
    # the screenshot is not blank: many colours, a good share of non-background pixels
    img = Image.open(io.BytesIO(run.screenshot)).convert("RGB")
    assert img.width >= 1200 and img.height > 2000  # the width less the scrollbar
    arr = np.asarray(img)
    background = (arr == arr[5, 5]).all(axis=2)
    assert background.mean() < 0.97
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 50
    # the report's accent colour (episode bars, recent windows) is drawn
    assert ((arr[:, :, 0] > 200) & (arr[:, :, 1] < 120) & (arr[:, :, 2] < 80)).sum() > 500
    (made["work"] / "screenshot.png").write_bytes(run.screenshot)


def test_the_browser_harness_sees_errors_and_fetches(tmp_path: Path) -> None:
    # the checks above could not pass on a broken page: the same harness on one
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png">'
                    '<script>console.error("boom"); undefinedFunction();</script>'
                    '</body></html>')
    run = load_page(page, ["document.querySelectorAll('img').length"])
    assert any("boom" in e for e in run.errors)
    assert any("undefinedFunction" in e for e in run.errors)
    assert "http://127.0.0.1:9/x.png" in run.requests
    assert run.values == [1]


# -- the parts ---------------------------------------------------------------------
def test_series_stay_bounded_and_keep_spikes() -> None:
    block = SeriesBlock(["score", "ratio"], capacity=64)
    rng = np.random.default_rng(3)
    for i in range(100_000):
        block.append(i, np.array([rng.random() * (50.0 if i == 71_234 else 1.0), i % 7]))
    x, y = block.points()
    assert x.size <= 65 and y.shape == (2, x.size)
    assert np.all(np.diff(x) > 0) and x[-1] == 99_999
    assert y[0].max() > 1.0  # the one spike survived 2**11-fold downsampling
    assert y[1].max() == 6.0


def test_parse_inject() -> None:
    assert parse_inject([]) == {k: v[1] for k, v in KINDS.items()}
    assert parse_inject(["variance=3,1.5", "share"])["variance"] == (1.5, 3.0)
    for bad, words in (("drift=1", "unknown scenario"), ("mean=x", "numbers"),
                       ("variance=0.5", "> 1"), ("missing=1.5", "in (0, 1)")):
        with pytest.raises(ValueError, match=re.escape(words)):
            parse_inject([bad])


def test_a_bad_inject_fails_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(PINNED / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "events.jsonl").write_text("{}\n")
    code = streamdrift_main(["report", "-c", str(tmp_path / "config.yaml"), "--input",
                             str(tmp_path / "events.jsonl"), "--html",
                             str(tmp_path / "r.html"), "--inject", "mean=-1"])
    assert code == 2
    assert "--inject mean=-1: magnitudes must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
    code = streamdrift_main(["report", "-c", str(tmp_path / "config.yaml"), "--input",
                             str(tmp_path / "events.jsonl"), "--html",
                             str(tmp_path / "r.html"), "--inject", "--share-category",
                             "income=x"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--share-category income=x: must be COLUMN=CATEGORY with a categorical" in err
    assert "country, label, merchant" in err


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_injections_change_what_they_say(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 20_000
    prof = NumericProfile.from_values(rng.normal(5.0, 2.0, 50_000))
    x = rng.normal(5.0, 2.0, n)
    x[rng.random(n) < 0.1] = np.nan
    u = rng.random(n)
    shifted = alter("mean", x, 0.5, prof, u)
    assert np.nanmean(shifted) - np.nanmean(x) == pytest.approx(0.5 * prof.std)
    wider = alter("variance", x, 1.5, prof, u)
    assert np.nanstd(wider) / np.nanstd(x) == pytest.approx(1.5, rel=1e-9)
    missing = alter("missing", x, 0.2, prof, u)
    assert np.isnan(missing).mean() == pytest.approx(0.1 + 0.2, abs=0.015)
    assert np.isnan(x).mean() == pytest.approx(0.1, abs=0.01)  # the input is untouched
    cats = np.array(["a", "b", "c", None], dtype=object)
    cprof = CategoricalProfile.from_values(rng.choice(cats[:3], 10_000, p=[0.5, 0.3, 0.2]))
    c = rng.choice(cats, n, p=[0.45, 0.27, 0.18, 0.1])
    more = alter("share", c, 0.1, cprof, u)
    present = np.not_equal(more, None)
    share = lambda v: (v == "a").sum() / np.not_equal(v, None).sum()  # noqa: E731
    assert share(more) - share(c) == pytest.approx(0.1, abs=0.015)
    assert present.sum() == np.not_equal(c, None).sum()  # no value lost or made missing


def test_estimate_lines(tmp_path: Path) -> None:
    p = tmp_path / "e.jsonl"
    p.write_bytes(b'{"a": 1}\n' * 300_000)
    assert estimate_lines(p) == pytest.approx(300_000, rel=0.01)
    p.write_bytes(b'{"a": 1}\n{"a": 2}')
    assert estimate_lines(p) == 2


# -- the what-if delay is the delay of the real pipeline on the injected history -------
def _history(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(10.0, 2.0, n), rng.lognormal(0.0, 0.5, n)
    c = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    path.write_bytes(b"".join(
        json.dumps({"model": "m", "f": {"x": float(x[i]), "y": float(y[i]), "c": str(c[i])}}
                   ).encode() + b"\n" for i in range(n)))


@pytest.mark.parametrize("seed,kind,magnitude", [(0, "mean", 0.5), (1, "variance", 1.5)])
def test_what_if_delay_is_the_replay_delay(tmp_path: Path, seed: int, kind: str,
                                           magnitude: float) -> None:
    """Inject the same drift into the history file itself, replay it with the plain
    ``replay``, and find the alarm exactly where the what-if run said."""
    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines

    _history(tmp_path / "reference.jsonl", 5000, seed + 100)
    _history(tmp_path / "history.jsonl", 6000, seed)
    cols = [{"name": "x", "path": "f.x", "type": "numeric"},
            {"name": "y", "path": "f.y", "type": "numeric"},
            {"name": "c", "path": "f.c", "type": "categorical"}]
    (tmp_path / "config.yaml").write_text(json.dumps({
        "models": [{"name": "m", "baseline": {"reference": "reference.jsonl"},
                    "features": cols}],
        "detection": {"false_alarm_events": 100_000, "window": 200, "cadence": 20}}))
    code = streamdrift_main(["--log-level", "warning", "report", "-c",
                             str(tmp_path / "config.yaml"), "--input",
                             str(tmp_path / "history.jsonl"), "--html", str(tmp_path / "r.html"),
                             "--json", str(tmp_path / "r.json"), "--inject",
                             f"{kind}={magnitude}", "--inject-at", "2000", "--no-progress"])
    assert code == 0
    (w,) = json.loads((tmp_path / "r.json").read_bytes())["what_if"]["m"]["positions"]
    at = w["at_line"]
    col = w["columns"]["x"]
    assert col["alarm_without_injection"] is None
    (hit,) = col["scenarios"][kind]["delays"]
    assert hit["delay"] is not None
    # the same drift, written into the events from line `at` on (alter() does this math)
    prof = resolve_baselines(load_config(tmp_path / "config.yaml"))["m"].profiles["x"]
    assert isinstance(prof, NumericProfile)
    lines = (tmp_path / "history.jsonl").read_bytes().splitlines(True)
    out = []
    for i, line in enumerate(lines):
        if i >= at:
            ev = json.loads(line)
            ev["f"]["x"] = float(alter(kind, np.array([ev["f"]["x"]]), magnitude, prof,
                                       np.zeros(1))[0])
            line = json.dumps(ev).encode() + b"\n"
        out.append(line)
    (tmp_path / "drifted.jsonl").write_bytes(b"".join(out))
    code = streamdrift_main(["--log-level", "warning", "replay", "-c",
                             str(tmp_path / "config.yaml"), "--input",
                             str(tmp_path / "drifted.jsonl"), "--report",
                             str(tmp_path / "replay.json"), "--no-progress"])
    assert code == 0
    rep = json.loads((tmp_path / "replay.json").read_bytes())
    first = min(d["index"] for d in rep["detections"]
                if d["feature"] == "x" and d["index"] >= at)
    assert first == at + hit["delay"]  # one event per line: the model's d-th event after `at`
    assert hit["detector"] in {d["detector"] for d in rep["detections"]
                               if d["index"] == first and d["feature"] == "x"}


def test_names_from_the_data_are_escaped() -> None:
    from stream.report.svg import category_bars, line_chart, timeline

    evil = '<script>alert("x")</script>&'
    for svg in (category_bars([evil, "b"], [0.5, 0.5], [0.2, 0.8], title=evil),
                line_chart([0, 1], [(evil, [0.1, 0.2], "#000")], title=evil),
                timeline([(evil, [(0.0, 1.0, 2.0)])], (0.0, 2.0), title=evil)):
        assert "<script" not in svg and "&lt;script&gt;" in svg


def test_model_level_episodes_are_on_the_timeline(tmp_path: Path) -> None:
    # events lacking every column (incomplete) for a stretch: the model-level test alarms
    _history(tmp_path / "reference.jsonl", 3000, 5)
    _history(tmp_path / "history.jsonl", 4000, 6)
    lines = (tmp_path / "history.jsonl").read_bytes().splitlines(True)
    lines[2000:2600] = [b'{"model": "m", "f": {}}\n'] * 600
    (tmp_path / "history.jsonl").write_bytes(b"".join(lines))
    (tmp_path / "config.yaml").write_text(json.dumps({
        "models": [{"name": "m", "baseline": {"reference": "reference.jsonl"},
                    "features": [{"name": "x", "path": "f.x", "type": "numeric"},
                                 {"name": "c", "path": "f.c", "type": "categorical"}]}],
        "detection": {"false_alarm_events": 100_000, "window": 200, "cadence": 20}}))
    code = streamdrift_main(["--log-level", "warning", "report", "-c",
                             str(tmp_path / "config.yaml"), "--input",
                             str(tmp_path / "history.jsonl"), "--html", str(tmp_path / "r.html"),
                             "--json", str(tmp_path / "r.json"), "--no-progress"])
    assert code == 0
    eps = json.loads((tmp_path / "r.json").read_bytes())["episodes"]
    assert any(e["feature"] == "" and 2000 <= e["open_index"] < 2600 for e in eps), eps
    assert "(incomplete events)" in (tmp_path / "r.html").read_text()


def test_model_quality_episodes_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           ) -> None:
    """``report --labels``: a concept drift's model-quality episode (column ``(labels)``)
    is on the model's timeline and in its model-quality card; ``--labels`` is checked like
    replay's."""
    import orjson

    from tests.support.labels import labelled_stream, lm_model, reference_lines

    (tmp_path / "reference.jsonl").write_bytes(b"\n".join(reference_lines(11, 4000)) + b"\n")
    (tmp_path / "config.yaml").write_text(json.dumps({
        "source": {"timestamp": {"path": "ts", "unit": "s"}},
        "detection": {"false_alarm_events": 100_000, "window": 500, "cadence": 50},
        "models": [lm_model()]}))
    parts = [labelled_stream(41, 4000), labelled_stream(42, 4000, flip=0.2, start=4000)]
    (tmp_path / "e.jsonl").write_bytes(b"\n".join(m for s in parts for m in s.events) + b"\n")
    (tmp_path / "l.jsonl").write_bytes(b"\n".join(sorted(
        (m for s in parts for m in s.labels), key=lambda m: orjson.loads(m)["ts"])) + b"\n")

    def report(*extra: str) -> int:
        return streamdrift_main(["--log-level", "error", "report", "-c",
                                 str(tmp_path / "config.yaml"), "--input",
                                 str(tmp_path / "e.jsonl"), "--html", str(tmp_path / "r.html"),
                                 "--json", str(tmp_path / "r.json"), "--no-progress", *extra])

    assert report("--labels", str(tmp_path / "l.jsonl")) == 0
    eps = json.loads((tmp_path / "r.json").read_bytes())["episodes"]
    quality = [e for e in eps if e["feature"] == "(labels)"]
    assert len(quality) == 1 and quality[0]["detectors"] == ["concept"], eps
    assert 4000 <= quality[0]["open_index"] < 8000
    page = (tmp_path / "r.html").read_text()
    assert "(labels) model quality" in page and 'id="q-lm"' in page
    assert f"<td class=\"num\">{quality[0]['open_index']:,}</td>" in page
    # without the labels: no model-quality episode, no card
    assert report() == 0
    assert 'id="q-lm"' not in (tmp_path / "r.html").read_text()
    capsys.readouterr()
    assert report("--labels", str(tmp_path / "none.jsonl")) != 0
    assert "--labels" in capsys.readouterr().err
