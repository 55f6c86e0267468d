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
#: the share of a model's false-alarm rate its estimated-performance drop alarm takes, of
#: what the concept detector leaves (stream.config.labels.CONCEPT_SHARE): the model's other
#: monitors split the rest as before
ESTIMATE_SHARE: Final = 0.05
_EXAMPLE: Final = "{window: 1000, calibration: auto}"
#: bounds of labels.estimate.window (the bootstrap at start-up draws 200 windows)
WINDOW_RANGE: Final = (100, 100_000)


def estimate_budget(model: Any) -> tuple[float, float]:
    """(factor of ``false_alarm_events`` for the model's other monitors, factor for its drop
    alarm), both of what the concept detector leaves, of a ModelConfig (or None): with
    ``labels.estimate`` and a reference (where the drop band comes from) the drop alarm
    takes :data:`ESTIMATE_SHARE`, so the model keeps its one knob.  The alarm is
    calibrated in predictions, at most one per model event, so its false episodes per
    model event are at most its share.  A reference without scores builds no band; the
    share is then left unused.

    >>> estimate_budget(None)
    (1.0, 1.0)
    """
    labels = getattr(model, "labels", None)
    baseline = getattr(model, "baseline", None)
    if getattr(labels, "estimate", None) is None \
            or getattr(baseline, "reference", None) is None:
        return 1.0, 1.0
    return 1.0 / (1.0 - ESTIMATE_SHARE), 1.0 / ESTIMATE_SHARE


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
