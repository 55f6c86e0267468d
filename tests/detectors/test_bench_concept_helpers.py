"""The pure helpers of ``bench/bench_concept.py`` and ``bench/concept_report.py`` (the
benchmark itself takes half an hour and is not run by the suite)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import bench_concept
from bench.bench_concept import _sr, delay_of, first_alarm_from, header, part_errors
from bench.concept_report import (
    NAMES,
    _in_band,
    delay_table,
    early_arl,
    median,
    ratio_ci,
    survivors,
)
from detectors.concept_sr import SR_SHIFTS, SR_WEIGHTS


class _Every:
    """A detector that alarms on every ``n``-th value (its own reset after each)."""

    def __init__(self, n: int) -> None:
        self.n, self.i, self.drift_detected = n, 0, False

    def update(self, x: int) -> None:
        self.i += 1
        self.drift_detected = self.i % self.n == 0


def test_the_first_alarm_after_a_warm_up_skips_the_alarms_in_it() -> None:
    stream = [0] * 100
    assert first_alarm_from(lambda: _Every(30), stream, 0) == 29
    assert first_alarm_from(lambda: _Every(30), stream, 40) == 59  # 29 was in the warm-up
    assert first_alarm_from(lambda: _Every(300), stream, 0) == -1
    # relative to the warm-up's end, as the bench records it: a false alarm, then a delay
    assert delay_of(np.array([59 - 40]), 30) == -2
    assert delay_of(np.array([89 - 40]), 30) == 19


def test_medians_drop_false_alarms_and_count_censored_runs_as_never() -> None:
    assert survivors([-2, 5, -1]).tolist() == [5.0, math.inf]
    assert median([-2, 10, 20, -1]) == 20.0  # of 10, 20, never
    assert math.isnan(median([-2, -2]))


def test_early_arl_reads_the_share_of_early_false_alarms_as_a_constant_hazard() -> None:
    assert early_arl([5, 6], 1_000) == math.inf
    assert early_arl([-2, -2], 1_000) == 0.0
    # half the runs alarmed in 1,000 events: exp(-1000 / a) = 0.5
    assert early_arl([-2, 5], 1_000) == 1_000 / math.log(2)


def test_the_ratio_interval_covers_the_ratio_and_separates_distinct_medians() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(90, 110, 300).tolist()
    lo, hi = ratio_ci(a, a, 2_000)
    assert lo <= 1.0 <= hi and hi - lo < 0.1
    b = rng.integers(180, 220, 12).tolist()  # a peer's dozen survivors, about twice as slow
    lo, hi = ratio_ci(a, b, 2_000)
    assert 0.4 < lo < 0.5 < hi < 0.6
    assert all(math.isnan(v) for v in ratio_ci(a, [-2, -2], 100))


def _cell(peer_arl0: float, peer_delays: list[int]) -> dict[str, Any]:
    d = {"ours": [100] * 10, **{n: [1_000] * 10 for n in
                                ["DDM", "EDDM", "HDDM_A", "HDDM_W", "ADWIN"]}}
    d["DDM"] = peer_delays
    peers = {n: {"arl0": 1e9, "value": 1.0} for n in d if n != "ours"}
    peers["DDM"]["arl0"] = peer_arl0
    return {"p": 0.1, "target": 2_000, "peers": peers, "delays_warm": {"0.02": d}}


def test_a_peer_is_matched_on_its_long_run_or_on_its_pre_change_arl0() -> None:
    args = argparse.Namespace(pre=1_000, boot=200)
    # in the band over the long run, but 9 of 10 runs false-alarmed before the change
    cell = _cell(2_000, [-2] * 9 + [50])
    assert _in_band(args, cell, "delays_warm", "DDM", window=False)
    assert not _in_band(args, cell, "delays_warm", "DDM", window=True)
    long_run = delay_table(args, [cell], "delays_warm")
    window = delay_table(args, [cell], "delays_warm", window=True)
    assert "| DDM | 2.00 NO |" in long_run[2]  # its one survivor, 50, against ours' 100
    assert "none | - | - |" in window[2]  # no peer has the pre-change hazard of the target
    assert "0 of 1" in long_run[-2] and "0 of 0" in window[-2]


def _run(ours: list[int], ddm_cold: list[int], ddm_warm: list[int]) -> dict[str, Any]:
    """A results file of one cell and one drop: ours the same in both protocols, DDM as
    given, the other peers as ours."""
    def drop(ddm: list[int]) -> dict[str, list[int]]:
        return {"ours": ours, "DDM": ddm, "EDDM": ours, "HDDM_A": ours, "HDDM_W": ours,
                "ADWIN": ours}
    return {"errors": {"cells": [{"p": 0.1, "target": 10_000.0,
                                  "delays": {"0.02": drop(ddm_cold)},
                                  "delays_warm": {"0.02": drop(ddm_warm)}}]}}


def test_the_survivors_check_flags_a_cold_start_median_from_lucky_runs(tmp_path: Any) -> None:
    import json

    from bench.concept_checks import check_survivors

    rng = np.random.default_rng(3)
    files = []
    for seed in (1, 2):
        ours = rng.integers(180, 220, 300).tolist()
        # cold: 270 of 300 runs false-alarm, the survivors fast; warm-up: all run, slower
        cold = [-2] * 270 + rng.integers(90, 110, 30).tolist()
        warm = rng.integers(280, 320, 300).tolist()
        path = tmp_path / f"r{seed}.json"
        path.write_text(json.dumps(_run(ours, cold, warm)))
        files.append(str(path))
    args = argparse.Namespace(files=files, boot=400,
                              cell=["0.10", "10000", "0.02", "delays", "DDM",
                                    "0.10", "10000", "0.02", "delays_warm", "DDM"])
    text = "\n".join(check_survivors(args))
    assert "of 2 (cell, drop, seed): ours 0, DDM 2, EDDM 0" in text
    assert "(30) → " in text  # DDM's 30 cold-start survivors are reported
    rows = [line for line in text.splitlines() if line.startswith("| 0.10 | 10,000 | 0.02 |")]
    cold_row, warm_row = rows
    pooled_cold = float(cold_row.split("|")[7].split()[0])
    pooled_warm = float(warm_row.split("|")[7].split()[0])
    assert 1.8 < pooled_cold < 2.2  # ~200 / ~100: ours "slower" against the survivors
    assert 0.6 < pooled_warm < 0.73  # ~200 / ~300 on the same runs after the warm-up
    assert cold_row.endswith("| 100% |") and warm_row.endswith("| 0% |")


def test_the_cell_filter_runs_only_the_drops_it_names() -> None:
    from bench.bench_concept import _drops

    every = argparse.Namespace(cell=[], drops=[0.02, 0.05, 0.10])
    assert _drops(every, 0.25, 2_000) == [0.02, 0.05, 0.10]
    some = argparse.Namespace(cell=[["0.10", "10000", "0.02"], ["0.10", "10000", "0.05"],
                                    ["0.25", "2000", "0.10"]], drops=[0.02, 0.05, 0.10])
    assert _drops(some, 0.10, 10_000) == [0.02, 0.05]
    assert _drops(some, 0.25, 2_000) == [0.10]
    assert _drops(some, 0.10, 2_000) == []  # a cell not named is skipped


def test_the_paired_check_compares_the_runs_both_survived(tmp_path: Any) -> None:
    import json

    from bench.concept_checks import check_paired

    # 300 runs; DDM survives the first 30 only, and on those ours is slow (400) while it is
    # fast (100) elsewhere: per detector the ratio is 100-ish / 50, paired it is 400 / 50
    ours = [400] * 30 + [100] * 270
    cold = [50] * 30 + [-2] * 270
    warm = [80] * 300
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_run(ours, cold, warm)))
    args = argparse.Namespace(files=[str(path)], boot=200,
                              cell=["0.10", "10000", "0.02", "delays", "DDM"])
    row = next(line for line in check_paired(args) if line.startswith("| r.json"))
    cols = [c.strip() for c in row.split("|")]
    assert cols[8] == "300 / 30 / 30"
    assert cols[9].startswith("100, 50, 2.00")  # the protocol: each its own survivors
    assert cols[10].startswith("400, 50, 8.00")  # the same 30 runs
    assert cols[11] == "4.00"  # ours on DDM's survivors / ours on all
    assert cols[12].startswith("100 / 80 (300) = 1.25")  # against DDM's warm-up median


def test_synth_alarms_count_from_the_monitored_start_and_split_at_the_change() -> None:
    from bench.concept_synth import _first_alarms

    # a peer fed a 100-event reference first: its alarms there are not counted
    assert _first_alarms(np.array([10, 150, 260]), 100, 100) == (-2, 1)  # 50: before the change
    assert _first_alarms(np.array([10, 230, 260]), 100, 100) == (30, 0)
    assert _first_alarms(np.array([10, 99]), 100, 100) == (-1, 0)  # nothing after the start
    assert _first_alarms(np.array([], dtype=np.int64), 0, 100) == (-1, 0)
    assert _first_alarms(np.array([100]), 0, 100) == (0, 0)  # at the change itself


def test_synth_table_takes_the_best_peer_in_band_and_marks_the_rest() -> None:
    from bench.concept_synth import synth_lines

    target = 10_000
    delays = {"ours": [40] * 9 + [-2], "DDM": [10] * 10, "EDDM": [60] * 10,
              "HDDM_A": [80] * 10, "HDDM_W": [-2] * 10, "ADWIN": [35] * 10}
    peers = {n: {"value": 1.0, "arl0": a} for n, a in
             [("DDM", 500.0), ("EDDM", 9_000.0), ("HDDM_A", 12_000.0), ("HDDM_W", 10_000.0),
              ("ADWIN", math.inf)]}
    row = {"p_ref": [0.1] * 10, "p_pre": [0.1] * 10, "p_after": [0.2] * 10,
           "targets": {str(target): {"peers": peers, "delays": delays,
                                     "ours": {"arl0": 10_500.0}}}}
    args = argparse.Namespace(synth_pre=2_000, boot=200, warm=10_000, online_warm=20_000,
                              synth_ref=10_000, synth_after=5_000, n_values=500_000,
                              null_factor=20.0, synth_arl_factor=10.0)
    text = "\n".join(synth_lines(args, {"modes": {"frozen": {"S": row}}}))
    line = next(x for x in text.splitlines() if x.startswith("| S |"))
    # DDM (10) is out of band, HDDM_W in band but every run discarded, ADWIN never in band:
    # the best in band is EDDM, 40 / 60
    assert "| EDDM | 0.67 |" in line and "| yes |" in line
    assert "500 ✗" in text and "10500 |" in text


def test_a_variant_grid_parses_with_one_weight_per_shift() -> None:
    from bench.concept_sr_variant import parse_variant
    assert parse_variant("E20=0.02,0.08,0.20,-0.02:0.3,0.3,0.3,0.1") == (
        "E20", ((0.02, 0.08, 0.20, -0.02), (0.3, 0.3, 0.3, 0.1)))
    with pytest.raises(SystemExit, match="one weight"):
        parse_variant("x=0.02,0.08:1.0")


def test_synth_null_streams_have_a_floor_so_both_targets_get_the_same_length() -> None:
    from bench.concept_synth import null_length

    args = argparse.Namespace(null_factor=20.0, synth_null_min=200_000)
    assert null_length(args, 10_000) == 200_000
    assert null_length(args, 2_000) == 200_000  # 40,000 by the factor alone
    assert null_length(args, 20_000) == 400_000  # the factor wins above the floor
    assert null_length(argparse.Namespace(null_factor=20.0), 2_000) == 40_000  # older args


def test_the_drift_table_tells_a_stationary_pre_change_stream_from_a_rising_one() -> None:
    from bench.concept_synth_pool import drift_lines

    rng = np.random.default_rng(5)
    ref, pre, runs = 5_000, 2_000, 200

    def result(rise: float) -> dict[str, Any]:
        p = rng.uniform(0.08, 0.12, runs)
        p_ref = rng.binomial(ref, p) / ref
        p_pre = rng.binomial(pre, p + rise) / pre
        row = {"p_ref": p_ref.tolist(), "p_pre": p_pre.tolist()}
        return {"synth": {"modes": {"online": {"S": row}}}}

    def cols(rise: float) -> list[str]:
        line = drift_lines([result(rise), result(rise)], ref, pre, 500)[2]
        return [c.strip() for c in line.split("|")]

    flat, up = cols(0.0), cols(0.015)
    assert flat[3] == "400" and up[3] == "400"
    assert abs(float(flat[8])) < 0.25  # mean z of an i.i.d. stream: 0 ± 0.05
    lo, hi = (float(x) for x in flat[6].split("(")[1].rstrip(")").split(" – "))
    assert lo < 0 < hi
    assert float(up[8]) > 1.5 and 320 < int(up[7]) <= 400  # +0.015: z ~ 2.1, ~98 % rose
    lo, hi = (float(x) for x in up[6].split("(")[1].rstrip(")").split(" – "))
    assert 0.01 < lo < 0.015 < hi < 0.02


def _sr_args(shifts: Any, weights: Any = None) -> argparse.Namespace:
    return argparse.Namespace(detector="sr", sr_shifts=shifts, sr_weights=weights)


def test_the_default_shifts_get_the_default_weights_given_on_the_command_line_or_not() -> None:
    assert _sr(_sr_args(SR_SHIFTS)) == (tuple(SR_SHIFTS), tuple(SR_WEIGHTS))
    # argparse gives a list: the default grid typed out keeps its weights (it got equal ones)
    assert _sr(_sr_args(list(SR_SHIFTS))) == (tuple(SR_SHIFTS), tuple(SR_WEIGHTS))
    assert _sr(_sr_args([0.02, 0.08])) == ((0.02, 0.08), (0.5, 0.5))
    assert _sr(_sr_args([0.02, 0.08], [0.9, 0.1])) == ((0.02, 0.08), (0.9, 0.1))
    assert _sr(argparse.Namespace(detector="cusum", sr_shifts=SR_SHIFTS, sr_weights=None)) is None
    with pytest.raises(SystemExit, match="one weight per shift"):
        _sr(_sr_args([0.02, 0.08], [1.0]))


def test_a_checkpoint_keeps_the_cells_finished_before_a_run_stops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ck = tmp_path / "partial.json"
    args = argparse.Namespace(
        seed=1, rates=[0.25], targets=[200, 400], drops=[0.10], cell=[], null_factor=5.0,
        peers_from=None, peer_params_from=None, arl_refs=2, refs=2, ref_size=2_000,
        n_values=20_000, shift=(0.02, 0.08), shares=(0.5, 0.5), down_share=None,
        detector="sr", sr_shifts=SR_SHIFTS, sr_weights=None, arl_factor=5.0, runs=4,
        pre=100, cap=500, warmup=0, checkpoint=ck)
    real = bench_concept.our_detectors

    def stop_at_the_second_cell(*a: Any, **k: Any) -> list[Any]:
        if ck.exists():
            raise KeyboardInterrupt  # the run stopped in its second cell
        return real(*a, **k)

    monkeypatch.setattr(bench_concept, "our_detectors", stop_at_the_second_cell)
    with pytest.raises(KeyboardInterrupt):
        part_errors(args, [])
    cells = json.loads(ck.read_text())["errors"]["cells"]
    assert [c["target"] for c in cells] == [200]
    assert len(cells[0]["delays"]["0.1"]["ours"]) == 4
    monkeypatch.setattr(bench_concept, "our_detectors", real)
    ck.unlink()
    assert [c["target"] for c in part_errors(args, [])["cells"]] == [200, 400]
    assert [c["target"] for c in json.loads(ck.read_text())["errors"]["cells"]] == [200, 400]


def test_part_1s_header_names_the_detector_that_ran() -> None:
    args = argparse.Namespace(
        seed=1, quick=False, part="errors", n_values=2_000_000, null_factor=40, synth_after=10_000,
        synth_null_min=0, synth_runs=30, synth_modes=[], shift=(0.02, 0.08), shares=(0.5, 0.5),
        down_share=0.1, detector="sr", sr_shifts=[0.02, 0.2], sr_weights=[0.6, 0.4], cell=[],
        errors_from=None, peers_from=None, peer_params_from=None, ref_size=20_000, arl_refs=20,
        arl_factor=40.0, refs=20, runs=300, pre=1_000, cap=20_000)
    text = "\n".join(header(args))
    assert "--sr-shifts 0.02 0.2 --sr-weights 0.6 0.4" in text
    assert "ours the Shiryaev-Roberts mixture over shifts 0.02, 0.2 (weights 0.6, 0.4)" in text
    assert "shares of the budget" not in text  # the CUSUMs' settings, which did not run
    args.detector = "cusum"
    text = "\n".join(header(args))
    assert "shifts 0.02, 0.08 (shares of the budget 0.5, 0.5" in text
    assert "Shiryaev-Roberts" not in text


def test_part_2s_command_line_names_its_warm_up_reference_and_pre_change_window() -> None:
    # their defaults changed (online warm-up 10,000 -> 20,000, reference 5,000 -> 10,000): a
    # printed command line without them cannot be rerun at the settings that ran
    args = argparse.Namespace(
        seed=2, quick=False, part="synth", n_values=500_000, null_factor=20, synth_after=3_000,
        synth_null_min=200_000, synth_runs=40, synth_targets=[2_000, 10_000],
        synth_modes=["online"], synth_first_run=40, synth_streams=["Hyperplane"],
        shift=(0.02, 0.08), shares=(0.5, 0.5), down_share=0.1, detector="sr",
        sr_shifts=list(SR_SHIFTS), sr_weights=None, cell=[], errors_from=None,
        peers_from=None, peer_params_from=None, warm=10_000, online_warm=10_000,
        synth_ref=5_000, synth_pre=2_000)
    line = header(args)[2]
    assert " --online-warm 10000 --synth-ref 5000 --synth-pre 2000" in line
    assert "--warm " not in line  # the frozen tree's warm-up: that mode did not run
    args.synth_modes, args.online_warm, args.synth_ref = ["frozen", "online"], 20_000, 10_000
    line = header(args)[2]
    assert " --warm 10000 --online-warm 20000 --synth-ref 10000 --synth-pre 2000" in line
    args.part, args.ref_size, args.arl_refs, args.arl_factor = "errors", 20_000, 20, 40.0
    args.refs, args.runs, args.pre, args.cap = 20, 300, 1_000, 20_000  # part 1: none of them
    assert "--synth-ref" not in header(args)[2] and "-warm" not in header(args)[2]


def test_compare_reads_ours_after_over_before_paired_per_cell_and_protocol() -> None:
    from bench.concept_compare import paired_table

    def res(ours: list[int]) -> dict[str, Any]:
        return {"errors": {"cells": [{"p": 0.1, "target": 2_000,
                                      "delays": {"0.02": {"ours": ours}},
                                      "delays_warm": {"0.02": {"ours": ours[::-1]}}}]}}

    before = list(range(100, 400))
    slower = [round(x * 1.2) for x in before]
    lines = paired_table([(res(before), res(slower)), (res(before), res(before))], 500)
    assert lines[0].count("seed 1 / 2") == 2
    row = lines[2].split(" | ")
    assert row[:3] == ["| 0.10", "2,000", "0.02"]
    # seed 1 20 % slower in every run: the paired interval is that ratio; seed 2 unchanged
    assert row[3] == "1.20 (1.20–1.20) / 1.00 (1.00–1.00)"
    assert row[4].rstrip(" |") == row[3]


def _test_then_train_errors(seed: int, warm: int, n: int) -> list[int]:
    """The online tree's errors written out here (not concept_synth's code): Hyperplane at
    the generator seed, test-then-train over ``warm`` events unrecorded, then ``n`` recorded."""
    from river import tree
    from river.datasets import synth

    model, errs = tree.HoeffdingTreeClassifier(), []
    for i, (x, y) in enumerate(synth.Hyperplane(seed=seed, n_features=10).take(warm + n)):
        if i >= warm:
            errs.append(int(model.predict_one(x) != y))
        model.learn_one(x, y)
    return errs


def test_ours_only_rerun_regenerates_the_stored_online_draws_at_their_settings() -> None:
    from bench.concept_synth_ours import run_seed, stream_args

    st = {"warm": 300, "ref": 400, "pre": 100, "after": 100, "n_values": 20_000}
    # the stored online run's reference rates, from seeds 7 * 1000 + run + 500
    p_ref = [float(np.mean(_test_then_train_errors(7_500 + r, 300, 400))) for r in range(2)]
    cell = {"delays": {k: [5, -2] for k in ["ours", *NAMES]},
            "peers": {k: {"arl0": 500.0} for k in NAMES},
            "ours": {"events_per_run": 2_000}}
    stream = "Hyperplane (new plane)"

    def stored(p: list[float]) -> dict[str, Any]:
        return {"synth": {"settings": {"online": st, "frozen": st}, "modes": {
            m: {stream: {"p_ref": p, "targets": {"500": cell}}} for m in ("online", "frozen")}}}

    args = stream_args(stored(p_ref), "online")
    assert (args.online_warm, args.synth_ref, args.synth_pre, args.synth_after) == (
        300, 400, 100, 100)
    assert stream_args(stored(p_ref), "frozen").warm == 300
    grids = {"default": (tuple(SR_SHIFTS), tuple(SR_WEIGHTS))}
    out = run_seed(7, stored(p_ref), stream, [500], grids, None, "online")["500"]
    assert out["p_ref"] == pytest.approx(p_ref)
    assert len(out["delays"]["default"]) == 2 and out["null_events"] == 4_000
    assert out["peers"]["ADWIN"] == [5, -2]
    # the frozen mode (other seeds, a tree that stops learning) is not these draws
    with pytest.raises(SystemExit, match="not the stored draws"):
        run_seed(7, stored(p_ref), stream, [500], grids, None, "frozen")


def _synth_args(**kw: Any) -> argparse.Namespace:
    """Part 2's options at a toy size (a few seconds), ours the default mixture."""
    base = dict(seed=4, synth_modes=["frozen"], synth_runs=3, synth_first_run=0,
                synth_streams=None, peer_params_from=None, warm=300, online_warm=300,
                synth_ref=400, synth_pre=100, synth_after=100, synth_targets=[500],
                null_factor=4.0, synth_null_min=0, steps=3, synth_arl_factor=2.0,
                n_values=20_000, detector="sr", sr_shifts=list(SR_SHIFTS), sr_weights=None,
                shift=(0.02, 0.08), shares=(0.5, 0.5), down_share=None)
    return argparse.Namespace(**{**base, **kw})


def test_more_synth_runs_from_a_later_start_are_a_full_runs_runs_with_its_peers(
        tmp_path: Any) -> None:
    full = bench_concept.part_synth(_synth_args(), bench_concept._peers())
    stored = tmp_path / "full.json"
    stored.write_text(json.dumps({"synth": full}, default=float))
    later = bench_concept.part_synth(
        _synth_args(synth_first_run=2, synth_runs=1, synth_streams=["hyper"],
                    peer_params_from=stored), bench_concept._peers())
    name = "Hyperplane (new plane)"
    assert list(later["modes"]["frozen"]) == [name]  # the other streams not run
    a, b = full["modes"]["frozen"][name], later["modes"]["frozen"][name]
    # run 0 of the later start is run 2 of the full run: the same generators' draws ...
    for k in ("p_ref", "p_pre", "p_after"):
        assert b[k] == [a[k][2]]
    assert a["p_ref"][0] != a["p_ref"][2]  # (the runs differ, so this tells them apart)
    ca, cb = a["targets"]["500"], b["targets"]["500"]
    # ... the peers at the full run's tuned values, no bisection, so their delays are its
    for n in NAMES:
        assert cb["peers"][n]["value"] == ca["peers"][n]["value"]
        assert math.isnan(cb["peers"][n]["tuned_arl"])
        assert cb["delays"][n] == [ca["delays"][n][2]]
    # ... and ours calibrated at the same seed, on other null draws for its ARL0
    assert cb["delays"]["ours"] == [ca["delays"]["ours"][2]]
    assert later["settings"]["frozen"]["first_run"] == 2
    with pytest.raises(SystemExit, match="names no stream"):
        bench_concept.part_synth(_synth_args(synth_streams=["Hyperplan3"]), [])


def test_more_runs_pool_after_the_stored_ones_at_the_stored_peers_or_fail() -> None:
    from bench.concept_synth_more import pool_seed

    st = {"warm": 300, "ref": 400, "pre": 100, "after": 100, "n_values": 20_000,
          "null_factor": 4.0}
    name = "Hyperplane (new plane)"

    def res(first: int, p: list[float], d: int, value: float = 1.0) -> dict[str, Any]:
        cell = {"delays": {k: [d] * len(p) for k in ["ours", *NAMES]},
                "peers": {k: {"value": value, "arl0": 500.0} for k in NAMES},
                "ours": {"alarms": 3, "events_per_run": 1_000}}
        return {"synth": {"settings": {"frozen": {**st, "first_run": first}},
                          "modes": {"frozen": {name: {"p_ref": p, "targets": {"500": cell}}}}}}

    stored = res(0, [0.1, 0.2], 7)
    ours = {"delays": {"default": [5, -2]}, "alarms": {"default": 4}, "null_events": 8_000,
            "p_ref": [0.1, 0.2]}
    # the new files in any order: pooled by their first run, ours from --ours-from
    v = pool_seed(1, stored, ours, [res(3, [0.4], 9), res(2, [0.3], 8)], "frozen", name, 500)
    assert v["p_ref"] == [0.1, 0.2, 0.3, 0.4] and v["first"] == [0, 2, 3]
    assert v["delays"]["ours"] == [5, -2, 8, 9] and v["delays"]["ADWIN"] == [7, 7, 8, 9]
    assert (v["alarms"], v["null_events"]) == (10, 10_000)
    with pytest.raises(SystemExit, match="a gap"):
        pool_seed(1, stored, ours, [res(3, [0.4], 9)], "frozen", name, 500)
    with pytest.raises(SystemExit, match="stored values"):
        pool_seed(1, stored, ours, [res(2, [0.3], 8, value=2.0)], "frozen", name, 500)
    with pytest.raises(SystemExit, match="not ours on the stored runs"):
        pool_seed(1, stored, {**ours, "p_ref": [0.1, 0.3]}, [], "frozen", name, 500)


def test_more_online_runs_pool_on_the_online_settings_not_the_frozen_ones() -> None:
    from bench.concept_synth_more import pool_seed

    name = "Hyperplane (new plane)"
    on = {"warm": 10_000, "ref": 5_000, "pre": 2_000, "after": 3_000, "n_values": 500_000,
          "null_factor": 20.0}
    fr = {**on, "warm": 300, "ref": 400, "after": 100}

    def cell(d: int, value: float, alarms: int) -> dict[str, Any]:
        return {"delays": {k: [d] for k in ["ours", *NAMES]},
                "peers": {k: {"value": value, "arl0": 2_000.0} for k in NAMES},
                "ours": {"alarms": alarms, "events_per_run": 20_000}}

    def res(first: int, p: float, d: int, settings: dict[str, Any] | None = None,
            value: float = 1.0) -> dict[str, Any]:
        # both modes in one file, at other settings, values and delays: reading the frozen
        # ones for an online pool gives other numbers or fails
        return {"synth": {
            "settings": {"online": {**(settings or on), "first_run": first},
                         "frozen": {**fr, "first_run": first}},
            "modes": {"online": {name: {"p_ref": [p], "targets": {"2000": cell(d, value, 2)}}},
                      "frozen": {name: {"p_ref": [p + 0.3],
                                        "targets": {"2000": cell(d + 50, 9.0, 7)}}}}}}

    stored = res(0, 0.1, 30)
    ours = {"delays": {"default": [25]}, "alarms": {"default": 11}, "null_events": 20_000,
            "p_ref": [0.1]}
    v = pool_seed(2, stored, ours, [res(1, 0.12, 40)], "online", name, 2000)
    assert v["p_ref"] == [0.1, 0.12] and v["settings"]["warm"] == 10_000
    assert v["delays"]["ours"] == [25, 40] and v["delays"]["ADWIN"] == [30, 40]
    assert v["values"]["ADWIN"] == 1.0
    # ours' ARL0 from the online runs: 40,000 events over 11 + 2 alarms
    assert (v["alarms"], v["null_events"]) == (13, 40_000)
    with pytest.raises(SystemExit, match="warm"):  # e.g. today's default online warm-up
        pool_seed(2, stored, ours, [res(1, 0.12, 40, {**on, "warm": 20_000})], "online",
                  name, 2000)
    with pytest.raises(SystemExit, match="stored values"):
        pool_seed(2, stored, ours, [res(1, 0.12, 40, value=2.0)], "online", name, 2000)


def test_a_first_chunk_is_the_stored_runs_with_ours_read_from_it_at_the_default_grid(
) -> None:
    from bench.concept_synth_more import pool_seed, stored_ours

    name = "Hyperplane (new plane)"
    st = {"warm": 20_000, "ref": 10_000, "pre": 2_000, "after": 3_000, "n_values": 500_000,
          "null_factor": 20.0}

    def res(first: int, p: list[float], d: int) -> dict[str, Any]:
        cell = {"delays": {k: [d + i for i in range(len(p))] for k in ["ours", *NAMES]},
                "peers": {k: {"value": 1.0, "arl0": 2_000.0} for k in NAMES},
                "ours": {"alarms": 5, "events_per_run": 20_000}}
        cell["delays"]["ours"][0] = -2
        return {"synth": {"settings": {"online": {**st, "first_run": first}},
                          "modes": {"online": {name: {"p_ref": p,
                                                      "targets": {"2000": cell}}}}}}

    stored = res(0, [0.1, 0.2], 30)
    md = ("`... --detector sr --sr-shifts 0.02 0.08 0.2 -0.02 -0.08 --sr-weights 0.3 0.3 0.3 "
          "0.05 0.05` (defaults otherwise)")
    ours = stored_ours(stored, md, "online", name, 2_000)
    assert ours["delays"]["default"] == [-2, 31] and ours["null_events"] == 40_000
    v = pool_seed(1, stored, ours, [res(2, [0.3], 50)], "online", name, 2_000)
    assert v["delays"]["ours"] == [-2, 31, -2] and v["delays"]["ADWIN"] == [30, 31, 50]
    assert (v["alarms"], v["null_events"]) == (10, 60_000)
    with pytest.raises(SystemExit, match="does not show"):  # another grid ran
        stored_ours(stored, md.replace("0.3 0.3 0.3 0.05 0.05", "0.45 0.45 0.05 0.05"),
                    "online", name, 2_000)


def test_the_more_runs_band_is_the_rule_at_l_and_4l_measured_once_per_rate() -> None:
    from bench.concept_report import band_rule
    from bench.concept_synth_more import band_check

    values = {"DDM": 3.0, "EDDM": 0.9, "HDDM_A": 1e-3, "HDDM_W": 1e-3, "ADWIN": 2e-3}
    cache: dict[str, Any] = {}
    b = band_check(3, 0.2, values, 25, 2, cache)
    for n in NAMES:
        h = b[n]["horizons"]
        assert (h["1"]["horizon"], h["4"]["horizon"]) == (1_000, 4_000)  # L = 40 targets
        assert b[n]["in_band"] == band_rule(b[n], 25)
    # measured once: a rate's entries are reused, another rate is measured afresh
    key = next(k for k in cache if "|ADWIN|" in k)
    cache[key] = {**cache[key], "in_band": "kept"}
    assert band_check(3, 0.2, values, 25, 2, cache)["ADWIN"]["in_band"] == "kept"
    assert band_check(3, 0.21, values, 25, 2, cache)["ADWIN"]["in_band"] != "kept"
    assert len(cache) == 2 * len(NAMES)


def test_the_more_runs_best_peer_must_pass_the_band_at_4l_too() -> None:
    from bench.concept_synth_more import report

    d = {"ours": [30] * 20, "DDM": [-2] * 20, "EDDM": [-2] * 20, "HDDM_A": [-2] * 20,
         "HDDM_W": [20] * 20, "ADWIN": [28] * 20}
    # HDDM_W in band at L (2,100) but not at 4L (3,000): a DDM-like growth, so ADWIN is matched
    seed = {"p_ref": [0.1] * 20, "first": [0], "delays": d, "alarms": 10,
            "null_events": 20_000, "values": {n: 1.0 for n in NAMES},
            "stored_arl0": {n: 2_000.0 for n in NAMES},
            "settings": {"warm": 20_000, "ref": 10_000, "pre": 2_000, "after": 3_000,
                         "n_values": 500_000},
            "recheck": {n: 2_100.0 for n in NAMES}, "recheck_4l": {**{
                n: 2_000.0 for n in NAMES}, "HDDM_W": 3_000.0},
            "in_band": ["DDM", "EDDM", "HDDM_A", "ADWIN"]}
    args = argparse.Namespace(target=2_000, mode="online", stream="Hyperplane (new plane)",
                              stored_pattern="s{seed}.json", ours_from="stored",
                              more_pattern="m{seed}.json", boot=200, band_streams=8,
                              recheck_events=0)
    lines, out = report(args, {1: seed}, 0.0)
    assert out["seeds"]["1"]["best"] == "ADWIN"
    assert out["seeds"]["1"]["ratio"]["ADWIN"][0] == 30 / 28
    assert any("20 (0/0); 2100 / 3000 ✗" in line for line in lines)


def _band_entry(pooled: dict[str, float]) -> dict[str, Any]:
    return {"horizons": {m: {"pooled": v} for m, v in pooled.items()}}


def test_the_band_rule_needs_the_pooled_arl0_in_band_at_l_and_at_4l() -> None:
    from bench.concept_report import band_rule
    assert band_rule(_band_entry({"1": 9_000, "4": 12_500, "16": 80_000}), 10_000)
    assert band_rule(_band_entry({"1": 7_050, "4": 12_950}), 10_000)  # near both edges
    # in band at L only, or at 4L only (DDM's accidents): out
    assert not band_rule(_band_entry({"1": 11_268, "4": 30_260}), 10_000)
    assert not band_rule(_band_entry({"1": 3_206, "4": 10_000}), 10_000)
    assert not band_rule(_band_entry({"1": 6_900, "4": 10_000}), 10_000)
    assert not band_rule(_band_entry({"1": 10_000}), 10_000)  # 4L not measured
    assert not band_rule(_band_entry({"1": math.inf, "4": math.inf}), 10_000)


def test_horizon_figures_tell_a_renewal_rate_from_one_that_stops_alarming() -> None:
    from bench.concept_band import summarise
    target, L = 100, 4_000
    steady = [list(range(99, 16 * L, 100))] * 2  # an alarm every 100 events, for ever
    stops = [list(range(99, 3_000, 100))] * 2  # 30 alarms in a burst, then never again
    s = summarise(steady, L, target, 16)
    assert [s[m]["pooled"] for m in ("1", "4", "16")] == [100, 100, 100]
    assert s["16"]["never"] == 0 and s["1"]["open"] == [0, 0]
    b = summarise(stops, L, target, 4)
    assert "16" not in b  # measured to 4L only
    assert b["1"]["pooled"] == L / 30 and b["4"]["pooled"] == 4 * L / 30  # grows with L
    assert b["1"]["open"] == [1_000, 1_000] and b["1"]["never"] == 0  # 10 targets: not yet
    assert b["4"]["open"] == [13_000, 13_000] and b["4"]["never"] == 2
    assert b["4"]["never_share_cycles"] == 2 / 62  # 60 completed cycles and 2 open ones
    assert b["4"]["longest"] == 100
    from bench.concept_band import trend
    assert trend({"horizons": s}).endswith("converges")
    assert trend({"horizons": b}) == "4.00 (4L / L): grows"
    none = summarise([[], [5]], L, target, 1)["1"]
    assert none["finite"] == 1 and math.isinf(none["max"]) and none["pooled"] == 2 * L


def test_a_peers_null_alarms_are_counted_across_chunks_with_its_own_resets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import concept_band
    monkeypatch.setattr(concept_band, "CHUNK", 7)
    assert concept_band.peer_alarms(lambda: _Every(5), 0.1, 0, 23, 1) == [4, 9, 14, 19]
    a = list(concept_band.null_chunks(0.3, 2, 23, 1))
    assert [len(c) for c in a] == [7, 7, 7, 2]
    assert a == list(concept_band.null_chunks(0.3, 2, 23, 1))  # the same draws for every peer
    assert a != list(concept_band.null_chunks(0.3, 3, 23, 1))


def _band_cell(arl0: dict[str, float], med: dict[str, int]) -> dict[str, Any]:
    d = {n: [m] * 20 for n, m in med.items()}
    return {"p": 0.1, "target": 10_000, "ours": {"arl0": 10_000},
            "peers": {n: {"arl0": a, "value": 1.0} for n, a in arl0.items()},
            "delays": {"0.02": d}, "delays_warm": {"0.02": d}}


def test_with_horizon_measurements_a_peer_in_band_by_one_stream_only_is_out() -> None:
    from bench.concept_band import verdicts
    from bench.concept_compare import rows
    from bench.concept_report import band_key
    arl0 = {"DDM": 10_526, "EDDM": 1e9, "HDDM_A": 1e9, "HDDM_W": 1e9, "ADWIN": 10_000}
    med = {"ours": 900, "DDM": 650, "EDDM": 100, "HDDM_A": 100, "HDDM_W": 100, "ADWIN": 2_200}
    cell = _band_cell(arl0, med)
    band = {band_key(0.1, 10_000, n, 1.0): _band_entry({"1": 1e9, "4": 1e9}) for n in NAMES}
    band[band_key(0.1, 10_000, "DDM", 1.0)] = _band_entry({"1": 11_268, "4": 30_260})
    band[band_key(0.1, 10_000, "ADWIN", 1.0)] = _band_entry({"1": 9_800, "4": 10_100})
    args = argparse.Namespace(pre=1_000, band=band)
    assert not _in_band(args, cell, "delays", "DDM", window=False)
    assert _in_band(args, cell, "delays", "ADWIN", window=False)
    assert _in_band(argparse.Namespace(pre=1_000), cell, "delays", "DDM", window=False)
    res = {"errors": {"cells": [cell]}}
    before = rows(res, res, 1_000)[0]["cold, long-run ARL0"]
    now = rows(res, res, 1_000, band)[0]["cold, long-run ARL0"]
    assert before[2:4] == ("DDM", 650) and now[2:4] == ("ADWIN", 2_200)
    v = [r for r in verdicts([("seed1", res)], band, 200) if r["protocol"] == "cold start"]
    assert v[0]["before"]["verdict"] == "NOT met" and v[0]["now"]["verdict"] == "met"
    assert v[0]["now"]["ratio"] == 900 / 2_200
    del band[band_key(0.1, 10_000, "EDDM", 1.0)]  # every peer measured, or no verdict
    with pytest.raises(SystemExit, match="EDDM"):
        _in_band(args, cell, "delays", "EDDM", window=False)
    with pytest.raises(SystemExit, match="EDDM"):
        verdicts([("seed1", res)], band, 200)


def test_the_same_runs_ratio_takes_only_the_runs_neither_detector_false_alarmed_in() -> None:
    from bench.concept_synth_more import row_cells

    # ours false-alarms in the 10 runs where both are fast (5 and 4 events): over its own
    # survivors ours is slow against the peer's median, on the same runs they tie
    ours = [-2] * 10 + [50] * 10 + [60] * 10
    peer = [4] * 10 + [50] * 10 + [-2] * 10
    d = {"ours": ours, **{n: peer for n in NAMES}}
    _, fig = row_cells(d, 2_000.0, {n: 2_000.0 for n in NAMES}, None, ["ADWIN"], 2_000,
                       2_000, 200)
    assert fig["best"] == "ADWIN"
    assert fig["ratio"]["ADWIN"][0] == 55 / 27  # medians over each one's own survivors
    runs, r, (lo, hi) = fig["joint"]["ADWIN"]
    assert runs == 10 and r == 1.0 and lo == hi == 1.0  # runs 10-19 only: 50 and 50
