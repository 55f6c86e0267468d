"""Embedding features (``type: vector``) of a model.

```yaml
models:
  - name: search
    ...
    features:
      - {name: query_emb, path: features.query_embedding, type: vector, dim: 384}
      - {name: doc_emb, path: features.doc_embedding, type: vector, dim: 768, components: 4}
```

``dim`` (required) is the fixed length of the array at ``path``; a value of another
length is counted as a ``wrong_dimension`` malformed value (:mod:`stream.formats.vectors`).
``components`` (default 8, at most 32 and at most ``dim``) is how many principal
directions of the reference the test watches (:mod:`detectors.embedding`).  A vector
column takes no per-column detectors (``detectors``, ``min_effect``) and is in no
multivariate group; its name labels its metrics, so it must differ from the model's other
column names (checked by the models parser).
"""

from __future__ import annotations

from typing import Any

from stream.config.keys import ABSENT, Ctx, KeyPath, get_key
from stream.config.tree import VectorConfig

VECTOR_KEYS = ("name", "path", "type", "dim", "components")
#: the largest ``components`` (detectors.embedding.MAX_COMPONENTS)
MAX_COMPONENTS = 32
_EXAMPLE = "{name: emb, path: features.embedding, type: vector, dim: 384}"


def vector_budget(n_vectors: int) -> float:
    """The factor of ``false_alarm_events`` for the rest of a model (its model-wide monitor
    and its segments) and for each of its ``n_vectors`` vector columns: one unit share of
    the false-alarm rate each, so the model keeps its one knob.

    >>> vector_budget(0), vector_budget(2)
    (1.0, 3.0)
    """
    return float(n_vectors + 1)


def is_vector(item: Any) -> bool:
    """Whether a raw feature entry declares ``type: vector``."""
    return isinstance(item, dict) and item.get("type") == "vector"


def parse_vector(ctx: Ctx, value: Any, path: KeyPath) -> VectorConfig | None:
    """The vector feature at ``path``; None (errors recorded, each under its key) if bad."""
    sec = ctx.section(value, path, (*VECTOR_KEYS, "detectors", "min_effect"), _EXAMPLE)
    if sec is None:
        return None
    for key in ("detectors", "min_effect"):
        if key in sec:
            ctx.error(path + (key,), "a vector column takes no per-column detectors; its "
                                     "test is set by dim and components (remove this key)")
    ok = True
    name: Any = get_key(sec, "name")
    if name is ABSENT:
        ctx.error(path + ("name",), "required: the column name")
        ok = False
    elif not isinstance(ctx.string(name, path + ("name",)), str):
        ok = False
    raw_path: Any = get_key(sec, "path")
    if raw_path is ABSENT:
        ctx.error(path + ("path",), "required: the dotted key path of the array in the "
                                    "event, e.g. features.embedding")
        ok = False
    else:
        raw_path = ctx.key_path(raw_path, path + ("path",))
        ok = ok and isinstance(raw_path, tuple)
    dim: Any = get_key(sec, "dim")
    if dim is ABSENT:
        ctx.error(path + ("dim",), "required for type vector: the fixed length of the "
                                   "array, e.g. dim: 384")
        ok = False
    else:
        dim = ctx.integer(dim, path + ("dim",), 2, 65_536)
        ok = ok and isinstance(dim, int)
    comps: Any = get_key(sec, "components")
    if comps is ABSENT:
        comps = min(8, dim) if isinstance(dim, int) else 8
    else:
        hi = min(MAX_COMPONENTS, dim) if isinstance(dim, int) else MAX_COMPONENTS
        comps = ctx.integer(comps, path + ("components",), 1, hi)
        ok = ok and isinstance(comps, int)
    if not ok:
        return None
    return VectorConfig(name=name, path=raw_path, dim=dim, components=comps)
