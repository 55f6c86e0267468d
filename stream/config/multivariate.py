"""The ``multivariate:`` list of a model: groups of numeric columns watched jointly.

```yaml
models:
  - name: credit
    ...
    multivariate:
      - {name: joint}                       # all numeric features of the model
      - {name: spend, columns: [amount, n_items, basket], method: moments}
```

``columns`` defaults to every numeric feature of the model (at least two);
``method`` is ``auto`` (``moments`` up to 24 columns, ``rff`` above), ``moments``
or ``rff`` (see :mod:`detectors.multivariate`).  A group's name labels its metrics
and episodes, so it must differ from the model's column names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from stream.config.keys import ABSENT, Ctx, KeyPath, get_key, one_of, suggest, type_name
from stream.config.tree import ColumnConfig, GroupConfig

GROUP_KEYS = ("name", "columns", "method")
METHODS = ("auto", "moments", "rff")
_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_EXAMPLE = "[{name: joint}] or [{name: spend, columns: [amount, n_items], method: auto}]"


def parse_groups(ctx: Ctx, value: Any, path: KeyPath,
                 columns: Sequence[ColumnConfig]) -> tuple[GroupConfig, ...]:
    """The model's groups; every problem is reported under its key path."""
    if value is ABSENT or value is None:
        return ()
    if not isinstance(value, list):
        ctx.error(path, f"must be a list of groups, e.g. {_EXAMPLE}; got {type_name(value)}")
        return ()
    by_name = {c.name: c for c in columns if isinstance(c.name, str)}
    numeric = [c.name for c in columns if c.role == "feature" and c.type == "numeric"]
    out: list[GroupConfig] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(value):
        where = path + (i,)
        sec = ctx.section(raw, where, GROUP_KEYS, "{name: joint, columns: [a, b]}")
        if sec is None:
            continue
        ok = True
        name = get_key(sec, "name")
        if name is ABSENT:
            ctx.error(where + ("name",), "required: the group's name, e.g. joint")
            ok = False
        elif not isinstance(name, str) or not _NAME_RE.match(name):
            ctx.error(where + ("name",), f"must be a name of letters, digits and underscores, "
                                         f"not starting with a digit; got {name!r}")
            ok = False
        elif name in by_name:
            ctx.error(where + ("name",), f"{name!r} is also a column of the model; a group "
                                         f"needs a name of its own (it labels its metrics)")
            ok = False
        elif name in seen:
            ctx.error(where + ("name",), f"duplicate group name {name!r} (also "
                                         f"multivariate[{seen[name]}]); names must be unique")
            ok = False
        else:
            seen[name] = i
        cols: Any = get_key(sec, "columns")
        if cols is ABSENT:
            cols = list(numeric)
            if len(cols) < 2:
                ctx.error(where + ("columns",), f"the model has {len(cols)} numeric feature(s); "
                                                f"a group needs at least 2: list its columns")
                ok = False
        elif not isinstance(cols, list) or len(cols) < 2 \
                or not all(isinstance(c, str) for c in cols):
            ctx.error(where + ("columns",), f"must be a list of at least 2 column names, got "
                                            f"{type_name(cols)}")
            ok = False
        else:
            for j, c in enumerate(cols):
                col = by_name.get(c)
                if col is None:
                    ctx.error(where + ("columns", j), f"no column {c!r} in this model"
                                                      f"{suggest(c, list(by_name))}")
                    ok = False
                elif col.type != "numeric":
                    ctx.error(where + ("columns", j), f"{c!r} is a {col.type} column; a group "
                                                      f"takes numeric columns only")
                    ok = False
            if len(set(cols)) != len(cols):
                ctx.error(where + ("columns",), "names a column twice; list each once")
                ok = False
        method: Any = get_key(sec, "method")
        if method is ABSENT:
            method = "auto"
        elif method not in METHODS:
            ctx.error(where + ("method",), f"{one_of(METHODS)}, got {method!r}")
            ok = False
        if ok:
            out.append(GroupConfig(name=name, columns=tuple(cols), method=method))
    return tuple(out)
