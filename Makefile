# fleet: the two commands a new machine needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: deps proto test lint unit demo demo-down clean constraints image wheels soak

deps:
	@./scripts/bootstrap.sh

proto: deps
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. fleet/proto/fleet.proto

lint: deps
	$(VENV)/bin/ruff check fleet tests benchmarks
	$(VENV)/bin/ruff format --check fleet tests benchmarks
	$(VENV)/bin/mypy

# Test files run in TEST_WORKERS processes (pytest-xdist), a file per worker at a time
# (fixtures are per file or per session): most of the suite waits on daemons, not on
# the CPU, so three workers on two cores take about two thirds of one's time.
TEST_WORKERS ?= 3
test: deps lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=8

unit: deps
	$(PY) -m pytest -q tests/unit

# The chaos soak (#25): SOAK_MINUTES of overlapping faults (default 10) with a seed it
# prints (SOAK_SEED reruns one); the report goes to benchmarks/results/soak-<date>.json.
soak: deps
	$(PY) -m fleet.testing.soak

demo: deps
	@./scripts/demo.sh up

demo-down:
	@./scripts/demo.sh down

# fleet's image, fleet:<version> and fleet:latest, into the daemon at $$DOCKER_HOST (or
# the default socket). BASE=python:3.11-slim (or any Python 3.11 image) picks the base;
# without it: python:3.11-slim if the daemon has it, else a local Debian one.
image: deps
	@./scripts/image.sh

# Only the wheels the image installs (build/wheels), for a `docker build` by hand.
wheels: deps
	@./scripts/image.sh --wheels

clean:
	rm -rf $(VENV) build .fleet .mypy_cache .ruff_cache .pytest_cache

# Pin the versions in the current virtualenv as the tested set.
constraints: deps
	@{ echo "# Exact versions the suite was last run with; \`make constraints\` regenerates this file."; \
	  $(VENV)/bin/pip freeze --exclude-editable | grep -v '^py-spy=='; } > constraints.txt
