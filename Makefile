# streamdrift — two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# two workers (pytest-xdist): the integration tests in one, in order, on one broker; the
# unit and statistical tests in the other (tests/conftest.py); `-p no:xdist` runs serially
PYTEST_ARGS ?= --durations=40 -n 2
# make image: the tag, and the base image (empty: the Dockerfile's python:3.11-slim-bookworm;
# "local": a Debian 12 base made here with mmdebstrap, for machines that reach no registry)
IMAGE ?= streamdrift:dev
BASE ?=

.PHONY: help install warm system-deps kafka lint typecheck test test-fast demo bench image clean

help:
	@echo "make demo       local Kafka broker + synthetic producer + streamdrift with a live view"
	@echo "make test       install everything needed, lint, run all tests (real Kafka/Prometheus/Alertmanager)"
	@echo "make test-fast  unit tests only (no broker, no Prometheus)"
	@echo "make bench      detector benchmarks (see docs/benchmarks.md)"
	@echo "make image      the container image (docker, or podman where no Docker daemon answers)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

# Prometheus and Alertmanager (Debian packages) for the metrics, rules and paging tests;
# a JDK and Maven for the local Kafka broker; openssl for the TLS test certificates.
# Installed only when missing.
system-deps:
	@if command -v promtool >/dev/null && command -v amtool >/dev/null \
	    && command -v prometheus >/dev/null && command -v prometheus-alertmanager >/dev/null \
	    && command -v java >/dev/null && command -v mvn >/dev/null && command -v openssl >/dev/null; then \
	  echo "system dependencies present"; \
	else \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	    --no-install-recommends prometheus prometheus-alertmanager default-jdk-headless maven openssl; \
	fi
	@# Under CI (CI set, not 0/false/no): podman, runc and mmdebstrap for the container image
	@# test (tests/integration/test_image.py), and chromium for the HTML report's browser
	@# test (tests/stream/test_report.py), which fail there without them. Elsewhere they
	@# are optional: without podman or chromium those tests are skipped.
	@ci=$$(printf '%s' "$${CI:-}" | tr '[:upper:]' '[:lower:]'); \
	if [ -n "$$ci" ] && [ "$$ci" != 0 ] && [ "$$ci" != false ] && [ "$$ci" != no ]; then \
	  if command -v podman >/dev/null && command -v runc >/dev/null \
	      && command -v mmdebstrap >/dev/null; then \
	    echo "container tools present"; \
	  else \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	      --no-install-recommends podman runc mmdebstrap; \
	  fi; \
	  if command -v chromium >/dev/null; then \
	    echo "chromium present"; \
	  else \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	      --no-install-recommends chromium; \
	  fi; \
	fi

# Apache Kafka broker classpath from Maven Central, cached in .cache/kafka
kafka: $(STAMP) system-deps
	$(BIN)/python deploy/kafka/broker.py fetch

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy detectors stream

# numba compiles its kernels on first use (the JSON scanner ~8 CPU-s): once, into its cache
warm: $(STAMP)
	$(BIN)/python -m stream.warm

test: install warm system-deps kafka lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

demo: install warm kafka
	$(BIN)/streamdrift demo

bench: install
	$(BIN)/python bench/bench_throughput.py
	$(BIN)/python bench/bench_detection.py

# The container image (deploy/Dockerfile); see deploy/image/build.py and docs/deploy.md.
image:
	$(PYTHON) deploy/image/build.py --tag $(IMAGE) $(if $(BASE),--base $(BASE))

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .mypy_cache
