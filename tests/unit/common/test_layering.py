"""The agent runs on every host of the pool: it must not import the control plane
(``fleet.controlplane`` brings the scheduler's numpy, the servers, the dashboard), nor
the dashboard's web stack. An import inside a function counts too. One such import
(an address check) once put 20 MiB into every agent at rest."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fleet

ROOT = Path(fleet.__file__).parent
AGENT_SIDE = [*sorted((ROOT / "agent").rglob("*.py")), ROOT / "cli" / "agentcmd.py"]
FORBIDDEN = ("fleet.controlplane", "fleet.dashboard", "fleet.scheduler", "numpy", "aiohttp")


def imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_agent_module_imports_the_control_plane() -> None:
    wrong = {
        f"{path.relative_to(ROOT.parent)}: {name}"
        for path in AGENT_SIDE
        for name in imported(path)
        if name.startswith(FORBIDDEN)
    }
    assert not wrong, sorted(wrong)


def test_the_agents_modules_load_without_the_control_plane() -> None:
    # What `fleet agent` loads before it runs: the CLI and every agent module.
    modules = ["fleet.cli.main", "fleet.cli.agentcmd"] + [
        "fleet." + ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in sorted((ROOT / "agent").rglob("*.py"))
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m.removesuffix('.__init__'))\n"
        f"print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
