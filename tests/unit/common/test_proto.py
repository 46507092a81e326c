"""The generated gRPC modules are checked in; this proves they match fleet.proto."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GENERATED = ["fleet_pb2.py", "fleet_pb2_grpc.py", "fleet_pb2.pyi", "fleet_pb2_grpc.pyi"]


def test_generated_modules_match_the_proto(tmp_path: Path) -> None:
    (tmp_path / "fleet" / "proto").mkdir(parents=True)
    shutil.copy(ROOT / "fleet/proto/fleet.proto", tmp_path / "fleet/proto/fleet.proto")
    bin_dir = str(Path(sys.executable).parent)  # protoc-gen-mypy lives beside python
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--grpc_python_out=.",
            "--mypy_out=.",
            "--mypy_grpc_out=.",
            "fleet/proto/fleet.proto",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        env={**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")},
    )
    for name in GENERATED:
        fresh = (tmp_path / "fleet/proto" / name).read_text()
        checked_in = (ROOT / "fleet/proto" / name).read_text()
        assert fresh == checked_in, f"fleet/proto/{name} is stale: run `make proto`"
