"""``python -m stream.warm``: compile streamdrift's numba kernels once and cache them.

numba compiles a kernel the first time it is called and caches the machine code next to
the module (``__pycache__``) or under ``NUMBA_CACHE_DIR``.  The JSON scanner
(``stream.formats._scan_kernel``) takes about 8 CPU-seconds to compile, the ADWIN kernel a
few; without this step the first ``streamdrift run`` or ``replay`` on a fresh install (or
the first test that decodes JSON) pays that at start-up.  ``make install`` and the
container image run it; running it again is cheap (the kernels load from the cache).
"""

from __future__ import annotations

import json
import sys
import time


def warm() -> dict[str, float]:
    """Call every kernel once with the types production uses; CPU seconds per kernel."""
    import numpy as np

    from detectors.adwin import ADWIN
    from stream.config.load import parse_config
    from stream.formats.scan import ScanDecoder

    spent: dict[str, float] = {}
    t0 = time.process_time()
    config = parse_config({"source": {"timestamp": {"path": "ts", "unit": "ms"}}, "models": [{
        "name": "m", "baseline": {"file": "b.json"},
        "select": {"field": "model", "equals": "m"},
        "features": [{"name": "x", "path": "f.x", "type": "numeric"},
                     {"name": "c", "path": "f.c", "type": "categorical"}],
        "predictions": [{"name": "p", "path": "p", "type": "numeric"}]}]}, "/")
    events = [{"model": "m", "ts": 1_700_000_000_000 + i, "f": {"x": 0.25 * i, "c": "é"[:i % 2]},
               "p": 1e-3 * i} for i in range(64)]
    messages = [json.dumps(e).encode() for e in events]
    messages += [b'{"model": "m", "f": {"x": "bad"}}', b"{", b'{"model": "m", "f": {"x": 1e400}}']
    decoder = ScanDecoder(config)
    batch = decoder.decode(messages)
    if decoder.scanned_batches != 1 or batch is None:  # pragma: no cover - config changed
        raise RuntimeError("the warm-up configuration is not served by the JSON scanner")
    spent["json scanner"] = time.process_time() - t0

    t0 = time.process_time()
    ADWIN().update(np.random.default_rng(0).normal(size=256))
    spent["adwin"] = time.process_time() - t0
    return spent


def main() -> int:
    t0 = time.monotonic()
    spent = warm()
    parts = ", ".join(f"{name} {cpu:.1f} CPU-s" for name, cpu in spent.items())
    print(f"numba kernels compiled or loaded from the cache in {time.monotonic() - t0:.1f} s "
          f"({parts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
