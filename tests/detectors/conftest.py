"""Shared helpers of the detectors tests: the reference families and small factories."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

# -- the distribution families of the acceptance criteria ---------------------------
CATEGORIES = np.array(list("abcdefgh"), dtype=object)
CATEGORY_PROBS = np.array([0.30, 0.20, 0.15, 0.10, 0.10, 0.07, 0.05, 0.03])


def _zero_inflated(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.where(rng.random(n) < 0.95, 0.0, rng.exponential(2.0, n))


FAMILIES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "normal": lambda rng, n: rng.normal(5.0, 2.0, n),
    "student_t3": lambda rng, n: rng.standard_t(3, n),
    "lognormal": lambda rng, n: rng.lognormal(0.0, 1.0, n),
    "poisson3": lambda rng, n: rng.poisson(3.0, n).astype(np.float64),
    "zero_inflated": _zero_inflated,
    "categorical": lambda rng, n: CATEGORIES[rng.choice(CATEGORIES.size, n, p=CATEGORY_PROBS)],
}
NUMERIC_FAMILIES = [f for f in FAMILIES if f != "categorical"]


def draw(family: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` values of ``family``."""
    return FAMILIES[family](rng, n)


def random_splits(rng: np.random.Generator, n: int, max_cuts: int = 12) -> list[tuple[int, int]]:
    """Random batch boundaries over ``n`` values (empty batches included)."""
    cuts = np.sort(rng.integers(0, n + 1, size=int(rng.integers(0, max_cuts + 1))))
    bounds = [0, *cuts.tolist(), n]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def feed(det, values: np.ndarray, bounds: list[tuple[int, int]]) -> list[int]:
    """Feed ``values`` to ``det`` in the given batches; alarm positions in the whole stream."""
    out: list[int] = []
    for lo, hi in bounds:
        got = det.update(values[lo:hi])
        assert got.dtype == np.int64
        out.extend((got + lo).tolist())
    return out


# -- calibration table, printed at the end of the run --------------------------------
CALIBRATION_TABLE: list[tuple[str, str, float, float, int, int, str]] = []


def pytest_terminal_summary(terminalreporter) -> None:  # pragma: no cover - reporting only
    if not CALIBRATION_TABLE:
        return
    tr = terminalreporter
    tr.section("false-alarm calibration: events between false alarms (pooled over seeds)")
    tr.write_line(f"{'family':<14}{'detectors':<12}{'target':>8}{'achieved':>10}{'ratio':>7}"
                  f"{'alarms':>8}{'events':>10}  per detector")
    for fam, dets, target, achieved, alarms, events, by in sorted(CALIBRATION_TABLE):
        tr.write_line(f"{fam:<14}{dets:<12}{target:>8.0f}{achieved:>10.0f}"
                      f"{achieved / target:>7.2f}{alarms:>8}{events:>10}  {by}")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240607)
