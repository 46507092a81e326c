# fleet: the two commands a new machine needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: deps proto test lint unit demo demo-down clean

deps:
	@./scripts/bootstrap.sh

proto: deps
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. fleet/proto/fleet.proto

lint: deps
	$(VENV)/bin/ruff check fleet tests benchmarks
	$(VENV)/bin/ruff format --check fleet tests benchmarks
	$(VENV)/bin/mypy

test: deps lint
	$(PY) -m pytest -q

unit: deps
	$(PY) -m pytest -q tests/unit

demo: deps
	@./scripts/demo.sh up

demo-down:
	@./scripts/demo.sh down

clean:
	rm -rf $(VENV) .fleet .mypy_cache .ruff_cache .pytest_cache
