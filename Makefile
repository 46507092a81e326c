# fleet: the two commands a new machine needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: deps proto test lint unit demo demo-down clean constraints

deps:
	@./scripts/bootstrap.sh

proto: deps
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. fleet/proto/fleet.proto

lint: deps
	$(VENV)/bin/ruff check fleet tests benchmarks
	$(VENV)/bin/ruff format --check fleet tests benchmarks
	$(VENV)/bin/mypy

test: deps lint
	$(PY) -m pytest -q --durations=8

unit: deps
	$(PY) -m pytest -q tests/unit

demo: deps
	@./scripts/demo.sh up

demo-down:
	@./scripts/demo.sh down

clean:
	rm -rf $(VENV) .fleet .mypy_cache .ruff_cache .pytest_cache

# Pin the versions in the current virtualenv as the tested set.
constraints: deps
	@{ echo "# Exact versions the suite was last run with; \`make constraints\` regenerates this file."; \
	  $(VENV)/bin/pip freeze --exclude-editable | grep -v '^py-spy=='; } > constraints.txt
