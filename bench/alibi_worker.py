"""Worker for ``bench/bench_alibi.py``: runs Alibi Detect's online MMD or LSDD in Alibi's
own virtual environment (alibi-detect 0.13, TensorFlow backend; its pins clash with ours).

Not imported by the project or its tests; started as a subprocess::

    /tmp/alibi-venv/bin/python bench/alibi_worker.py DIR DETECTOR ERT WINDOW BOOTSTRAPS SEED

``DIR`` holds ``reference.npy``, ``null.npy`` (a clean stream) and ``streams.json`` (names of
``<name>.npy`` streams with a change after ``change`` events).  Prints one JSON object:
set-up time, the alarms on the null stream (the detector is reset after each alarm, as
Alibi's examples do), the CPU µs per ``predict`` call on the null stream and, for each
stream, the index of the first alarm (``None`` if none).  A stream stops at its first
alarm.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def cache_path(d: str, args: list[str]) -> str | None:
    """A result file keyed by the inputs (the arrays and the arguments): a run that stops
    can be resumed, and its finished jobs are not redone; ``ALIBI_WORKER_CACHE=`` (empty)
    turns it off."""
    root = os.environ.get("ALIBI_WORKER_CACHE",
                          os.path.join(tempfile.gettempdir(), "streamdrift-alibi-cache"))
    if not root:
        return None
    h = hashlib.sha256(json.dumps(args).encode())
    names = ["reference", "null", *json.load(open(f"{d}/streams.json"))]
    for name in names:
        h.update(open(f"{d}/{name}.npy", "rb").read())
    os.makedirs(root, exist_ok=True)
    return os.path.join(root, h.hexdigest()[:32] + ".json")


def main() -> int:
    d, detector, ert, window, boots, seed = sys.argv[1:7]
    cached = cache_path(d, sys.argv[2:7])
    if cached:
        # another worker on the same inputs: wait for its result (a lock left by a killed
        # worker must be removed by hand)
        while not os.path.exists(cached):
            try:
                os.close(os.open(cached + ".lock", os.O_CREAT | os.O_EXCL))
                break
            except FileExistsError:
                time.sleep(5)
        if os.path.exists(cached):
            print(open(cached).read().strip())
            return 0
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.random.set_seed(int(seed))
    np.random.seed(int(seed))  # noqa: NPY002 (Alibi draws from the global state)
    from alibi_detect.cd import LSDDDriftOnline, MMDDriftOnline

    cls = {"mmd": MMDDriftOnline, "lsdd": LSDDDriftOnline}[detector]
    ref = np.load(f"{d}/reference.npy").astype(np.float32)
    w0, c0 = time.perf_counter(), time.process_time()
    cd = cls(ref, ert=float(ert), window_size=int(window), backend="tensorflow",
             n_bootstraps=int(boots), verbose=False)
    setup_wall, setup_cpu = time.perf_counter() - w0, time.process_time() - c0
    print(json.dumps({"setup_wall_s": setup_wall}), file=sys.stderr, flush=True)

    null = np.load(f"{d}/null.npy").astype(np.float32)
    cd.reset_state()
    alarms, run_lengths, since = 0, [], 0
    c0 = time.process_time()
    for x in null:
        since += 1
        if cd.predict(x, return_test_stat=False)["data"]["is_drift"]:
            alarms += 1
            run_lengths.append(since)
            since = 0
            cd.reset_state()
    cpu_per_event = (time.process_time() - c0) / len(null) if len(null) else float("nan")
    print(json.dumps({"null_alarms": alarms}), file=sys.stderr, flush=True)
    head = {"detector": detector, "ert": float(ert), "window": int(window),
            "bootstraps": int(boots), "n_ref": len(ref), "seed": int(seed),
            "setup_wall_s": setup_wall, "setup_cpu_s": setup_cpu,
            "null_events": len(null), "null_alarms": alarms,
            "run_lengths": run_lengths, "us_per_event": cpu_per_event * 1e6}
    # a worker stopped part-way leaves its finished streams in CACHE.progress (one JSON
    # object a line: this head, then {name: first alarm} per stream, in the given order)
    progress = open(cached + ".progress", "w") if cached else None
    if progress:
        progress.write(json.dumps(head) + "\n")
        progress.flush()

    first: dict[str, int | None] = {}
    for name in json.load(open(f"{d}/streams.json")):
        cd.reset_state()
        first[name] = None
        for i, x in enumerate(np.load(f"{d}/{name}.npy").astype(np.float32)):
            if cd.predict(x, return_test_stat=False)["data"]["is_drift"]:
                first[name] = i
                break
        if progress:
            progress.write(json.dumps({name: first[name]}) + "\n")
            progress.flush()
    if progress:
        progress.close()
    result = json.dumps({**head, "first": first})
    if cached:
        with open(cached + ".tmp", "w") as f:
            f.write(result)
        os.replace(cached + ".tmp", cached)
        os.remove(cached + ".lock")
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
