"""The Butane renderer: butane's translation for its subset, and a refusal, with file,
key path and line, for everything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet.install.butane import ButaneError, main, render

HEAD = "variant: fcos\nversion: 1.4.0\n"


def refusal(text: str, files_dir: Path | None = None) -> ButaneError:
    with pytest.raises(ButaneError) as caught:
        render(text, source="host.bu", files_dir=files_dir)
    return caught.value


def test_a_file_as_butane_translates_it() -> None:
    # Flatcar's docs show butane's output for exactly this config (update-strategies.md).
    text = (
        "variant: flatcar\nversion: 1.0.0\nstorage:\n  files:\n"
        "    - path: /etc/flatcar/update.conf\n      overwrite: true\n"
        "      contents:\n        inline: |\n          REBOOT_STRATEGY=etcd-lock\n"
        "      mode: 0420\n"
    )
    config = render(text)
    assert json.dumps(config) == json.dumps(
        {
            "ignition": {"version": "3.3.0"},
            "storage": {
                "files": [
                    {
                        "overwrite": True,
                        "path": "/etc/flatcar/update.conf",
                        "contents": {
                            "compression": "",
                            "source": "data:,REBOOT_STRATEGY%3Detcd-lock%0A",
                        },
                        "mode": 272,
                    }
                ]
            },
        }
    )  # dumps compares the key order too: Ignition's Go struct order, as butane prints


def test_every_supported_field_in_ignitions_order(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "agent.key").write_bytes(b"KEY")
    text = HEAD + (
        "passwd:\n  users:\n    - ssh_authorized_keys: [ssh-ed25519 AAAA me]\n      name: core\n"
        "systemd:\n  units:\n"
        "    - name: a.service\n      enabled: true\n      mask: false\n"
        '      dropins:\n        - contents: "[Service]\\n"\n          name: 10-x.conf\n'
        '      contents: "[Unit]\\n"\n'
        "storage:\n"
        "  files:\n"
        "    - mode: 0o600\n      contents: {local: pki/agent.key}\n"
        "      user: {id: 10001}\n      path: /etc/k\n      group: {name: core}\n"
        "    - path: /etc/empty\n"
        "  directories:\n    - path: /var/lib/x\n      mode: 0700\n      overwrite: false\n"
    )
    config = render(text, files_dir=tmp_path)
    assert list(config) == ["ignition", "passwd", "storage", "systemd"]
    assert config["passwd"] == {
        "users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAA me"]}]
    }
    assert list(config["storage"]) == ["directories", "files"]
    key, empty = config["storage"]["files"]
    assert list(key) == ["group", "path", "user", "contents", "mode"]
    assert key["mode"] == 0o600 and key["user"] == {"id": 10001}
    assert key["contents"] == {"compression": "", "source": "data:,KEY"}
    assert empty == {"path": "/etc/empty"}  # no default mode: Ignition applies 0644
    directory = config["storage"]["directories"][0]
    assert list(directory) == ["overwrite", "path", "mode"] and directory["mode"] == 0o700
    unit = config["systemd"]["units"][0]
    assert list(unit) == ["contents", "dropins", "enabled", "mask", "name"]
    assert unit["dropins"] == [{"contents": "[Service]\n", "name": "10-x.conf"}]


def test_empty_sections_are_left_out() -> None:
    config = render(HEAD + "storage:\n  files: []\nsystemd: {}\npasswd:\n  users: []\n")
    assert config == {"ignition": {"version": "3.3.0"}}


@pytest.mark.parametrize(
    ("text", "where", "line", "says"),
    [
        # a typo: unknown in Butane too
        (
            HEAD + "storage:\n  files:\n    - path: /x\n      moed: 0644\n",
            "$.storage.files.0.moed",
            6,
            "unknown key moed: a file takes",
        ),
        (HEAD + "sytemd: {}\n", "$.sytemd", 3, "unknown key sytemd"),
        # real Butane, outside the subset: never dropped, butane itself is named
        (
            HEAD + "storage:\n  links:\n    - path: /x\n",
            "$.storage.links",
            4,
            "render this config with butane itself",
        ),
        (
            HEAD + "storage:\n  files:\n    - path: /x\n      contents: {source: 'https://x'}\n",
            "$.storage.files.0.contents.source",
            6,
            "outside what this renderer translates",
        ),
        (
            HEAD + "passwd:\n  users:\n    - name: core\n      password_hash: x\n",
            "$.passwd.users.0.password_hash",
            6,
            "butane itself",
        ),
        (HEAD + "kernel_arguments: {}\n", "$.kernel_arguments", 3, "butane itself"),
        (HEAD + "boot_device: {}\n", "$.boot_device", 3, "butane itself"),
        # what a Go struct cannot hold, or holds twice
        (
            HEAD + "storage:\n  files:\n    - path: /x\n      path: /y\n",
            "$.storage.files.0.path",
            6,
            "given twice",
        ),
        (
            HEAD + "storage:\n  files:\n    - path: /x\n      mode: '0644'\n",
            "$.storage.files.0.mode",
            6,
            "whole number",
        ),
        (
            HEAD + "storage:\n  files:\n    - path: 12\n",
            "$.storage.files.0.path",
            5,
            "must be a string, not int '12': quote it",
        ),
        (HEAD + "storage:\n  files:\n    path: /x\n", "$.storage.files", 5, "must be a list"),
        (
            HEAD + "storage:\n  files:\n    - path: /x\n      overwrite: 1\n",
            "$.storage.files.0.overwrite",
            6,
            "true or false",
        ),
        (
            HEAD + "storage:\n  files:\n    - path: /x\n      contents:\n",
            "$.storage.files.0.contents",
            6,
            "must be a mapping",
        ),
        (
            HEAD + "storage:\n  files:\n    - mode: 0644\n",
            "$.storage.files.0.path",
            5,
            "path is required",
        ),
        (
            HEAD + "systemd:\n  units:\n    - enabled: true\n",
            "$.systemd.units.0.name",
            5,
            "name is required",
        ),
        # butane's warnings, which --strict makes errors
        (
            HEAD + "storage:\n  files:\n    - path: /x\n      mode: 644\n",
            "$.storage.files.0.mode",
            6,
            "write 0644",
        ),
        (
            HEAD + "storage:\n  directories:\n    - path: /x\n      mode: 755\n",
            "$.storage.directories.0.mode",
            6,
            "write 0755",
        ),
        # the header
        ("version: 1.4.0\n", "$.variant", 1, "variant is required"),
        (
            "variant: fcos\nversion: 1.5.0\n",
            "$.version",
            2,
            "fcos 1.5.0 is not one of fcos 1.4.0, flatcar 1.0.0",
        ),
        ("variant: flatcar\nversion: 1.4.0\n", "$.version", 2, "is not one of"),
        ("- variant: fcos\n", "$", 1, "must be a mapping"),
        ("", "$", None, "empty"),
        ("variant: [\n", "$", None, "not valid YAML"),
    ],
)
def test_refusals_name_the_file_the_key_and_the_line(
    text: str, where: str, line: int | None, says: str
) -> None:
    error = refusal(text)
    assert (error.where, error.line) == (where, line)
    assert says in error.problem
    assert str(error).startswith(f"host.bu: error at {where}")


def test_modes_that_are_fine_in_decimal_pass() -> None:
    # 0 and octal-looking but typical modes are not butane's decimal-mode warning
    for mode in ("0", "0644", "0o755", "420", "493"):
        render(HEAD + f"storage:\n  files:\n    - path: /x\n      mode: {mode}\n")


def test_contents_take_one_source(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    error = refusal(
        HEAD + "storage:\n  files:\n    - path: /x\n      contents: {inline: a, local: a}\n",
        tmp_path,
    )
    assert error.problem == "only one of inline and local can be set"


def test_local_contents_need_the_files_dir_and_stay_in_it(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (tmp_path / "secret").write_text("outside")
    local = HEAD + "storage:\n  files:\n    - path: /x\n      contents:\n        local: {}\n"
    assert "pass --files-dir DIR" in refusal(local.format("a")).problem
    assert "outside the files directory" in refusal(local.format("../secret"), files).problem
    assert (
        "outside the files directory" in refusal(local.format(tmp_path / "secret"), files).problem
    )
    missing = refusal(local.format("pki/ca.crt"), files)
    assert missing.where == "$.storage.files.0.contents.local" and "cannot read" in missing.problem


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.bu"
    good.write_text(HEAD + "storage:\n  files:\n    - path: /x\n      contents: {inline: hi}\n")
    out = tmp_path / "good.ign"
    assert main(["--pretty", "--strict", "-o", str(out), str(good)]) == 0
    assert json.loads(out.read_text())["storage"]["files"][0]["contents"]["source"] == "data:,hi"
    assert out.read_text().endswith("}\n")
    bad = tmp_path / "bad.bu"
    bad.write_text(HEAD + "storage:\n  filez: []\n")
    assert main([str(bad)]) == 1
    assert capsys.readouterr().err == (
        f"{bad}: error at $.storage.filez, line 4: unknown key filez: "
        "a storage takes directories, files\n"
    )
    assert main([str(tmp_path / "missing.bu")]) == 1
    assert "cannot read" in capsys.readouterr().err
