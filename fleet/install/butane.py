"""Butane to Ignition for the subset fleet's configs use; every other key is refused.

The real ``butane`` (coreos/butane) is the reference and the tool to prefer. This
renderer exists because it is not packaged where fleet is built and tested (no Debian
or PyPI release), and an Ignition config nobody rendered is one nobody validated. It
translates exactly what ``deploy/fcos`` and ``deploy/flatcar`` need, as butane does:

- ``variant``/``version``: fcos 1.4.0 and flatcar 1.0.0, both Ignition 3.3.0;
- ``storage.files``: path, mode, overwrite, user, group, and contents from ``inline``
  or ``local`` (a file under ``--files-dir``), written as data URLs (``ignjson``);
- ``storage.directories``: path, mode, overwrite, user, group;
- ``systemd.units``: name, enabled, mask, contents, dropins (name, contents);
- ``passwd.users``: name, ssh_authorized_keys.

Anything else, a typo or a real Butane key outside the subset, is an error that names
the file, the key's path and its line, so no field is ever dropped in silence: render
with butane itself to use more of the spec. Butane's warnings that this subset can meet
(a mode written in decimal) are errors too, as with ``butane --strict``.

    python -m fleet.install.butane --pretty --files-dir FILES agent.bu > agent.ign
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleet.install.ignjson import data_url, dumps

__all__ = ["SPECS", "ButaneError", "main", "render", "render_file"]

# (variant, version) -> the Ignition spec version butane translates it to.
SPECS = {("fcos", "1.4.0"): "3.3.0", ("flatcar", "1.0.0"): "3.3.0"}

# Every key Butane's base v0.4 schema (fcos 1.4, flatcar 1.0) has, per object, and the
# subset this renderer translates: a key in the first but not the second is "not
# supported here", one in neither is unknown (a typo, or another spec's key).
_BUTANE_KEYS = {
    "config": "variant version ignition kernel_arguments passwd storage systemd boot_device",
    "storage": "directories disks files filesystems links luks raid trees",
    "file": "group overwrite path user append contents mode",
    "resource": "compression http_headers source inline local verification",
    "directory": "group overwrite path user mode",
    "owner": "id name",
    "systemd": "units",
    "unit": "contents dropins enabled mask name",
    "dropin": "contents name",
    "passwd": "groups users",
    "user": "gecos groups home_dir name no_create_home no_log_init no_user_group "
    "password_hash primary_group should_exist ssh_authorized_keys shell system uid",
}
_SUPPORTED = {
    "config": "variant version passwd storage systemd",
    "storage": "directories files",
    "file": "group overwrite path user contents mode",
    "resource": "inline local",
    "directory": "group overwrite path user mode",
    "owner": "id name",
    "systemd": "units",
    "unit": "contents dropins enabled mask name",
    "dropin": "contents name",
    "passwd": "users",
    "user": "name ssh_authorized_keys",
}

_INT = "tag:yaml.org,2002:int"
_STR = "tag:yaml.org,2002:str"
_BOOL = "tag:yaml.org,2002:bool"
_OCTAL_12 = re.compile(r"0o[0-7]+")  # YAML 1.2's octal, which butane's yaml.v3 reads
_SCALARS = yaml.SafeLoader("")  # only its constructor is used: YAML 1.1 ints and bools


class ButaneError(Exception):
    """A config this renderer refuses: ``str()`` says where (file, key path, line) and
    what to do."""

    def __init__(self, source: str, where: str, line: int | None, problem: str) -> None:
        at = f"{where}, line {line}" if line is not None else where
        super().__init__(f"{source}: error at {at}: {problem}")
        self.source, self.where, self.line, self.problem = source, where, line, problem


@dataclass(frozen=True)
class _Ctx:
    source: str  # the config's name in messages
    files_dir: Path | None
    compress: bool

    def fail(self, where: str, node: yaml.Node | None, problem: str) -> ButaneError:
        line = node.start_mark.line + 1 if node is not None else None
        return ButaneError(self.source, where, line, problem)


def render(
    text: str, *, source: str = "<config>", files_dir: Path | None = None, compress: bool = True
) -> dict[str, Any]:
    """The Ignition config (a dict in Ignition's key order) that Butane ``text`` says;
    ButaneError for anything outside the subset or wrong in it. ``local`` contents are
    read from under ``files_dir``; ``compress=False`` never gzips file contents (butane
    gzips when that is shorter)."""
    ctx = _Ctx(source, files_dir, compress)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ctx.fail("$", None, f"not valid YAML: {exc}") from None
    if root is None:
        raise ctx.fail("$", None, "the config is empty: it needs at least variant and version")
    return _config(ctx, root)


def render_file(
    path: Path, *, files_dir: Path | None = None, compress: bool = True
) -> dict[str, Any]:
    """``render`` of the Butane file at ``path``."""
    return render(path.read_text(), source=str(path), files_dir=files_dir, compress=compress)


# -- reading the YAML, strictly --------------------------------------------------------


def _fields(ctx: _Ctx, node: yaml.Node, where: str, kind: str) -> dict[str, yaml.Node]:
    """The keys of mapping ``node`` (a Butane ``kind``), refusing duplicates and every
    key outside the subset."""
    if not isinstance(node, yaml.MappingNode):
        raise ctx.fail(where, node, f"must be a mapping (key: value lines), not {_shape(node)}")
    supported = _SUPPORTED[kind].split()
    fields: dict[str, yaml.Node] = {}
    for key_node, value in node.value:
        key = key_node.value if key_node.tag == _STR else None
        at = f"{where}.{key}" if key else where
        if key is None:
            raise ctx.fail(at, key_node, f"keys must be words, not {key_node.value!r}")
        if key in fields:
            raise ctx.fail(at, key_node, f"{key} is given twice: keep one")
        if key not in supported:
            raise ctx.fail(at, key_node, _unsupported(kind, key, supported))
        fields[key] = value
    return fields


def _unsupported(kind: str, key: str, supported: list[str]) -> str:
    known = ", ".join(supported)
    if key in _BUTANE_KEYS[kind].split():
        return (
            f"{key} is Butane, but outside what this renderer translates ({known}): "
            "render this config with butane itself"
        )
    return f"unknown key {key}: a {kind} takes {known}"


def _shape(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.tag.rsplit(':', 1)[-1]} {node.value!r}"


def _items(ctx: _Ctx, node: yaml.Node, where: str) -> list[tuple[str, yaml.Node]]:
    if not isinstance(node, yaml.SequenceNode):
        raise ctx.fail(where, node, f"must be a list (lines starting with -), not {_shape(node)}")
    return [(f"{where}.{i}", item) for i, item in enumerate(node.value)]


def _str(ctx: _Ctx, node: yaml.Node, where: str) -> str:
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
        return str(node.value)
    hint = ": quote it" if isinstance(node, yaml.ScalarNode) else ""
    raise ctx.fail(where, node, f"must be a string, not {_shape(node)}{hint}")


def _bool(ctx: _Ctx, node: yaml.Node, where: str) -> bool:
    if not isinstance(node, yaml.ScalarNode) or node.tag != _BOOL:
        raise ctx.fail(where, node, f"must be true or false, not {_shape(node)}")
    return bool(_SCALARS.bool_values[node.value.lower()])  # YAML 1.1's, as yaml.v3 reads


def _int(ctx: _Ctx, node: yaml.Node, where: str) -> int:
    if isinstance(node, yaml.ScalarNode) and node.tag == _INT:
        return int(_SCALARS.construct_yaml_int(node))
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR and _OCTAL_12.fullmatch(node.value):
        return int(node.value[2:], 8)
    hint = ""
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR and node.value.isdigit():
        hint = f": write {node.value} without quotes"
    raise ctx.fail(where, node, f"must be a whole number, not {_shape(node)}{hint}")


def _required_str(
    ctx: _Ctx, fields: dict[str, yaml.Node], key: str, where: str, node: yaml.Node
) -> str:
    if key not in fields:
        raise ctx.fail(f"{where}.{key}", node, f"{key} is required")
    return _str(ctx, fields[key], f"{where}.{key}")


# -- the translation, in the key order of Ignition 3.3's Go structs ---------------------


def _config(ctx: _Ctx, node: yaml.Node) -> dict[str, Any]:
    fields = _fields(ctx, node, "$", "config")
    variant = _required_str(ctx, fields, "variant", "$", node)
    version = _required_str(ctx, fields, "version", "$", node)
    ignition = SPECS.get((variant, version))
    if ignition is None:
        known = ", ".join(f"{v} {n}" for v, n in SPECS)
        raise ctx.fail("$.version", fields["version"], f"{variant} {version} is not one of {known}")
    out: dict[str, Any] = {"ignition": {"version": ignition}}
    if "passwd" in fields:
        _put(out, "passwd", _passwd(ctx, fields["passwd"], "$.passwd"))
    if "storage" in fields:
        _put(out, "storage", _storage(ctx, fields["storage"], "$.storage"))
    if "systemd" in fields:
        _put(out, "systemd", _systemd(ctx, fields["systemd"], "$.systemd"))
    return out


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    """Go's ``omitempty`` (with clarketm/json, empty structs too): leave out what is
    empty."""
    if value not in ({}, [], None):
        out[key] = value


def _passwd(ctx: _Ctx, node: yaml.Node, where: str) -> dict[str, Any]:
    fields = _fields(ctx, node, where, "passwd")
    out: dict[str, Any] = {}
    if "users" in fields:
        users = [_user(ctx, n, at) for at, n in _items(ctx, fields["users"], f"{where}.users")]
        _put(out, "users", users)
    return out


def _user(ctx: _Ctx, node: yaml.Node, where: str) -> dict[str, Any]:
    fields = _fields(ctx, node, where, "user")
    out: dict[str, Any] = {"name": _required_str(ctx, fields, "name", where, node)}
    if "ssh_authorized_keys" in fields:
        at = f"{where}.ssh_authorized_keys"
        keys = [_str(ctx, n, i) for i, n in _items(ctx, fields["ssh_authorized_keys"], at)]
        _put(out, "sshAuthorizedKeys", keys)
    return out


def _storage(ctx: _Ctx, node: yaml.Node, where: str) -> dict[str, Any]:
    fields = _fields(ctx, node, where, "storage")
    out: dict[str, Any] = {}
    if "directories" in fields:
        at = f"{where}.directories"
        _put(
            out,
            "directories",
            [_node(ctx, n, i, "directory") for i, n in _items(ctx, fields["directories"], at)],
        )
    if "files" in fields:
        at = f"{where}.files"
        _put(out, "files", [_node(ctx, n, i, "file") for i, n in _items(ctx, fields["files"], at)])
    return out


def _node(ctx: _Ctx, node: yaml.Node, where: str, kind: str) -> dict[str, Any]:
    """A file or a directory: Ignition's Node (group, overwrite, path, user), then the
    file's contents, then mode."""
    fields = _fields(ctx, node, where, kind)
    out: dict[str, Any] = {}
    if "group" in fields:
        _put(out, "group", _owner(ctx, fields["group"], f"{where}.group"))
    if "overwrite" in fields:
        out["overwrite"] = _bool(ctx, fields["overwrite"], f"{where}.overwrite")
    path = _required_str(ctx, fields, "path", where, node)
    out["path"] = path
    if "user" in fields:
        _put(out, "user", _owner(ctx, fields["user"], f"{where}.user"))
    if "contents" in fields:
        _put(out, "contents", _contents(ctx, fields["contents"], f"{where}.contents"))
    if "mode" in fields:
        out["mode"] = _mode(ctx, fields["mode"], f"{where}.mode", directory=kind == "directory")
    return out


def _owner(ctx: _Ctx, node: yaml.Node, where: str) -> dict[str, Any]:
    fields = _fields(ctx, node, where, "owner")
    out: dict[str, Any] = {}
    if "id" in fields:
        out["id"] = _int(ctx, fields["id"], f"{where}.id")
    if "name" in fields:
        out["name"] = _str(ctx, fields["name"], f"{where}.name")
    return out


def _contents(ctx: _Ctx, node: yaml.Node, where: str) -> dict[str, Any]:
    fields = _fields(ctx, node, where, "resource")
    if len(fields) > 1:
        raise ctx.fail(where, node, "only one of inline and local can be set")
    if "inline" in fields:
        data = _str(ctx, fields["inline"], f"{where}.inline").encode()
    elif "local" in fields:
        data = _local(ctx, fields["local"], f"{where}.local")
    else:
        return {}
    source, compression = data_url(data, compress=ctx.compress)
    return {"compression": compression, "source": source}


def _local(ctx: _Ctx, node: yaml.Node, where: str) -> bytes:
    """The bytes of a ``local`` file: under the files dir, never outside it (butane's
    ReadLocalFile and EnsurePathWithinFilesDir)."""
    name = _str(ctx, node, where)
    if ctx.files_dir is None:
        raise ctx.fail(
            where, node, "local paths are relative to a files directory: pass --files-dir DIR"
        )
    base = os.path.abspath(ctx.files_dir)
    path = os.path.abspath(os.path.join(base, name))
    if path != base and not path.startswith(base + os.sep):
        raise ctx.fail(where, node, f"{name} is outside the files directory {ctx.files_dir}")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ctx.fail(where, node, f"cannot read {path}: {exc.strerror}") from None


def _mode(ctx: _Ctx, node: yaml.Node, where: str, *, directory: bool) -> int:
    mode = _int(ctx, node, where)
    octal = _decimal_to_octal(mode)
    if octal is not None and not _typical(mode, directory) and _typical(octal, directory):
        raise ctx.fail(
            where,
            node,
            f"mode {mode} would be reasonable if written in octal: write 0{mode} "
            "(butane warns of this, and --strict refuses it)",
        )
    return mode


def _decimal_to_octal(mode: int) -> int | None:
    """``mode``'s decimal digits read as octal (644 -> 0o644); None if they cannot be."""
    if not 0 <= mode <= 7777 or any(d in "89" for d in str(mode)):
        return None
    return int(str(mode), 8)


def _typical(mode: int, directory: bool) -> bool:
    """butane's isTypicalMode: permissions nobody would write by mistake."""
    if mode == 0:
        return True
    had_r = had_w = had_x = False
    for shift in (0, 3, 6):  # other, group, user: each must have what the wider one has
        perm = (mode >> shift) & 7
        r, w, x = bool(perm & 4), bool(perm & 2), bool(perm & 1)
        if (had_r and not r) or (had_w and not w) or (had_x and not x):
            return False
        if x and had_r and not had_x:
            return False
        if (w or x) and not r:
            return False
        had_r, had_w, had_x = had_r or r, had_w or w, had_x or x
    if not had_r:
        return False
    if directory:
        return had_x and not mode & 0o4000 and not (mode & 0o3000 and not had_w)
    if mode & 0o6000 and (not had_x or mode & 2):
        return False
    return not mode & 0o1000


def _systemd(ctx: _Ctx, node: yaml.Node, where: str) -> dict[str, Any]:
    fields = _fields(ctx, node, where, "systemd")
    out: dict[str, Any] = {}
    if "units" in fields:
        units = [_unit(ctx, n, at) for at, n in _items(ctx, fields["units"], f"{where}.units")]
        _put(out, "units", units)
    return out


def _unit(ctx: _Ctx, node: yaml.Node, where: str) -> dict[str, Any]:
    fields = _fields(ctx, node, where, "unit")
    out: dict[str, Any] = {}
    if "contents" in fields:
        out["contents"] = _str(ctx, fields["contents"], f"{where}.contents")
    if "dropins" in fields:
        at = f"{where}.dropins"
        _put(out, "dropins", [_dropin(ctx, n, i) for i, n in _items(ctx, fields["dropins"], at)])
    for key in ("enabled", "mask"):
        if key in fields:
            out[key] = _bool(ctx, fields[key], f"{where}.{key}")
    out["name"] = _required_str(ctx, fields, "name", where, node)
    return out


def _dropin(ctx: _Ctx, node: yaml.Node, where: str) -> dict[str, Any]:
    fields = _fields(ctx, node, where, "dropin")
    out: dict[str, Any] = {}
    if "contents" in fields:
        out["contents"] = _str(ctx, fields["contents"], f"{where}.contents")
    out["name"] = _required_str(ctx, fields, "name", where, node)
    return out


# -- the command ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fleet.install.butane``: butane's options, for this subset."""
    parser = argparse.ArgumentParser(
        prog="python -m fleet.install.butane",
        description="Render a Butane config (fcos 1.4.0, flatcar 1.0.0; the subset "
        "fleet's deploy/ configs use) to Ignition JSON. Refuses every key it does not "
        "translate; use the real butane for the rest of the spec.",
    )
    parser.add_argument("input", nargs="?", help="the Butane file (default: standard input)")
    parser.add_argument("-d", "--files-dir", type=Path, help="where local: paths are read from")
    parser.add_argument("-p", "--pretty", action="store_true", help="indent the JSON")
    parser.add_argument(
        "-s", "--strict", action="store_true", help="accepted for butane's sake: always strict"
    )
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    parser.add_argument(
        "--no-resource-auto-compression",
        action="store_true",
        help="never gzip file contents (butane gzips when that is shorter)",
    )
    args = parser.parse_args(argv)
    compress = not args.no_resource_auto_compression
    try:
        if args.input is None:
            config = render(
                sys.stdin.read(), source="<stdin>", files_dir=args.files_dir, compress=compress
            )
        else:
            config = render_file(Path(args.input), files_dir=args.files_dir, compress=compress)
    except ButaneError as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot read {args.input}: {exc.strerror}", file=sys.stderr)
        return 1
    text = dumps(config, pretty=args.pretty)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
