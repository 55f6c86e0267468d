"""The ``labels.estimate`` key of a binary model: estimated performance without labels.

.. code-block:: yaml

    labels:
      task: binary
      score_column: score
      ...
      estimate:                 # `estimate: {}` takes every default
        window: 1000            # predictions per partition in the recent-window estimate
        calibration: auto       # auto | always | never: recalibrate the scores on the
                                # labelled reference (auto: when it fails the test)

See docs/labels.md ("Estimated performance without labels").
"""

from __future__ import annotations

from typing import Any, Final

from detectors.cbpe import CALIBRATION_MODES
from stream.config.keys import ABSENT, BAD, Bad, Ctx, KeyPath, get_key
from stream.config.tree import EstimateConfig

_KEYS: Final = ("window", "calibration")
_EXAMPLE: Final = "{window: 1000, calibration: auto}"
#: bounds of labels.estimate.window (the bootstrap at start-up draws 200 windows)
WINDOW_RANGE: Final = (100, 100_000)


def parse_estimate(ctx: Ctx, value: Any, path: KeyPath, task: Any) -> EstimateConfig | Bad:
    """Validate ``labels.estimate`` (``task``: the section's task, already checked)."""
    if task != "binary":
        if isinstance(task, str):
            return ctx.error(path, f"estimated performance is for task binary (a score column "
                                   f"with P(positive)); remove it (task is {task})")
        return BAD
    sec = ctx.section(value, path, _KEYS, _EXAMPLE)
    if sec is None:
        return BAD
    kw: dict[str, Any] = {}
    if get_key(sec, "window") is not ABSENT:
        kw["window"] = ctx.integer(sec["window"], path + ("window",), *WINDOW_RANGE)
    if get_key(sec, "calibration") is not ABSENT:
        kw["calibration"] = ctx.string(sec["calibration"], path + ("calibration",),
                                       choices=CALIBRATION_MODES)
    if any(isinstance(v, Bad) for v in kw.values()):
        return BAD
    return EstimateConfig(**kw)
