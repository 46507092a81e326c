"""fleet's declared dependencies match what its code needs where it runs: the agent and
the CLI go without numpy (the ``server`` extra's), the floors of grpcio and protobuf are
what the generated code checks at import, and the tested versions satisfy every bound."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[3]
PROTO = ROOT / "fleet" / "proto"

# Imports every module the agent and the CLI run, then lists what of numpy got loaded.
_AGENT_AND_CLI = """
import importlib, pkgutil, sys
import fleet.agent, fleet.cli
for package in (fleet.agent, fleet.cli):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
import fleet.client, fleet.cli.main, fleet.transport, fleet.pki
print(sorted(m for m in sys.modules if m.split(".")[0] == "numpy"))
"""

# The control plane started where numpy is missing (None in sys.modules: import fails).
_SERVER_WITHOUT_NUMPY = """
import sys
sys.modules["numpy"] = None
sys.argv = ["fleet", "server", "--insecure", "--etcd", "127.0.0.1:1"]
from fleet.cli.main import main
main()
"""


def _project() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def _requirements() -> dict[str, Requirement]:
    project = _project()
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    listed = [*project["dependencies"], *extras["server"]]  # type: ignore[misc]
    return {Requirement(r).name: Requirement(r) for r in listed}


def test_agent_and_cli_do_not_import_numpy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _AGENT_AND_CLI], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_server_without_numpy_says_which_extra_to_install() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SERVER_WITHOUT_NUMPY], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'fleet-orchestrator[server]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_numpy_is_only_in_the_server_extra() -> None:
    project = _project()
    assert not any(Requirement(r).name == "numpy" for r in project["dependencies"])  # type: ignore[attr-defined]
    assert "numpy" in _requirements()


def test_protobuf_floor_is_what_the_generated_code_checks() -> None:
    generated = (PROTO / "fleet_pb2.py").read_text()
    call = re.search(
        r"ValidateProtobufRuntimeVersion\(\s*\S+,\s*(\d+),\s*(\d+),\s*(\d+),", generated
    )
    assert call, "fleet_pb2.py no longer checks the protobuf runtime's version"
    checked = ".".join(call.groups())
    assert str(_requirements()["protobuf"].specifier).startswith(f">={checked}")


def test_grpcio_floor_is_what_the_generated_code_checks() -> None:
    generated = (PROTO / "fleet_pb2_grpc.py").read_text()
    found = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", generated)
    assert found
    assert str(_requirements()["grpcio"].specifier) == f">={found.group(1)}"


def test_the_tested_versions_satisfy_the_declared_bounds() -> None:
    """constraints.txt is what the suite ran with: a pin outside a bound (typer past its
    cap after `make constraints`) means the bound or the pin must move, on purpose."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, pinned = line.partition("==")
        if sep and not line.startswith("#"):
            pins[Requirement(name).name.lower().replace("_", "-")] = pinned
    for name, requirement in _requirements().items():
        key = name.lower().replace("_", "-")
        assert key in pins, f"{name} is not pinned in constraints.txt (make constraints)"
        assert requirement.specifier.contains(pins[key]), f"{name}=={pins[key]} vs {requirement}"
