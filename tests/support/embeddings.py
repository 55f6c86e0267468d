"""Synthetic embedding streams: a Gaussian mixture of clusters in ``dim`` dimensions
(the issue's scenario "a change in the share of one embedding cluster")."""

from __future__ import annotations

import numpy as np

#: the scenario: 8 clusters in 64 dimensions, cluster 0's share 12.5 % -> 25 %
CLUSTERS, DIM = 8, 64
SHIFTED_SHARE = 0.25


class Mixture:
    """``clusters`` centres drawn once (seed ``seed``, spread ``spread`` per coordinate),
    unit isotropic noise around each."""

    def __init__(self, seed: int = 0, clusters: int = CLUSTERS, dim: int = DIM,
                 spread: float = 1.0) -> None:
        self.centres = np.random.default_rng(seed).normal(0.0, spread, size=(clusters, dim))

    def shares(self, first: float | None = None) -> np.ndarray:
        k = self.centres.shape[0]
        if first is None:
            return np.full(k, 1.0 / k)
        return np.r_[first, np.full(k - 1, (1.0 - first) / (k - 1))]

    def draw(self, rng: np.random.Generator, n: int, first: float | None = None) -> np.ndarray:
        which = rng.choice(self.centres.shape[0], size=n, p=self.shares(first))
        return self.centres[which] + rng.normal(size=(n, self.centres.shape[1]))


# -- events of a model with an embedding column (replay and broker tests) -------------------
MODEL = "emb"


def events(seed: int, segments: list[tuple[int, float | None]], *, mixture_seed: int = 0,
           t0: float = 1.7e9) -> list[bytes]:
    """JSON events of model ``emb``: a numeric feature ``x`` (N(0, 1) throughout) and a
    64-d embedding ``f.emb`` from :class:`Mixture`; ``segments`` of (count, share of
    cluster 0, None: uniform)."""
    import orjson

    mix = Mixture(mixture_seed)
    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    for n, share in segments:
        vecs = mix.draw(rng, n, share).round(5).tolist()
        xs = rng.normal(size=n).round(6).tolist()
        for x, v in zip(xs, vecs, strict=True):
            out.append(orjson.dumps({"model": MODEL, "ts": t0 + len(out) * 0.001,
                                     "f": {"x": x, "emb": v}}))
    return out


def config(reference: str, *, detection: dict | None = None, components: int = 8,
           **source: object) -> dict:
    """A configuration of model ``emb``: numeric ``x`` and the 64-d vector ``emb``."""
    return {
        "source": source or {"kafka": {"bootstrap_servers": "127.0.0.1:9", "topics": ["t"],
                                       "group_id": "g"}},
        "models": [{"name": MODEL, "select": {"field": "model", "equals": MODEL},
                    "baseline": {"reference": reference},
                    "features": [{"name": "x", "path": "f.x", "type": "numeric"},
                                 {"name": "emb", "path": "f.emb", "type": "vector",
                                  "dim": DIM, "components": components}]}],
        "detection": detection or {"false_alarm_events": 1_000_000, "window": 500,
                                   "cadence": 50},
        "metrics": {"port": 0},
    }


def write_reference(path, n: int = 10_000, seed: int = 99):  # type: ignore[no-untyped-def]
    path.write_bytes(b"\n".join(events(seed, [(n, None)])))
    return path


# -- the same stream as Open Inference Protocol requests (source.format: open-inference) ---


def oip_requests(seed: int, segments: list[tuple[int, float | None]], *, rows: int = 10,
                 mixture_seed: int = 0) -> list[bytes]:
    """OIP requests of ``rows`` rows each (the counts of ``segments`` are multiples of
    it): a numeric tensor ``x`` of shape ``[rows]`` and the 64-d embedding tensor ``emb`` of
    shape ``[rows, 64]`` (flat, row-major) from :class:`Mixture`."""
    import orjson

    mix = Mixture(mixture_seed)
    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    for n, share in segments:
        vecs = mix.draw(rng, n, share).round(5)
        xs = rng.normal(size=n).round(6)
        for i in range(0, n, rows):
            out.append(orjson.dumps({"id": f"r{seed}-{len(out)}", "inputs": [
                {"name": "x", "shape": [rows], "datatype": "FP64",
                 "data": xs[i:i + rows].tolist()},
                {"name": "emb", "shape": [rows, DIM], "datatype": "FP32",
                 "data": vecs[i:i + rows].reshape(-1).tolist()}]}))
    return out


def oip_config(reference: str, *, detection: dict | None = None, **kafka: object) -> dict:
    """A configuration of model ``emb`` over OIP requests: numeric ``inputs.x`` and the
    64-d vector ``inputs.emb`` (a ``[n, 64]`` tensor)."""
    return {
        "source": {"format": "open-inference",
                   "kafka": kafka or {"bootstrap_servers": "127.0.0.1:9", "topics": ["t"],
                                      "group_id": "g"}},
        "models": [{"name": MODEL, "baseline": {"reference": reference},
                    "features": [{"name": "x", "path": "inputs.x", "type": "numeric"},
                                 {"name": "emb", "path": "inputs.emb", "type": "vector",
                                  "dim": DIM}]}],
        "detection": detection or {"false_alarm_events": 1_000_000, "window": 500,
                                   "cadence": 50},
        "metrics": {"port": 0},
    }
