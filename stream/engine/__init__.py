"""The processing core shared by ``run`` and ``replay``: baselines, the pipeline, its figures."""
