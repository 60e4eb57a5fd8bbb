"""`.ci/system-packages` (run by `make test` and .ci/run): installs the missing Debian packages of
requirements/system.txt as root, and otherwise stops with the command to run. `dpkg-query`,
`id` and `apt-get` are replaced by shims on PATH, so nothing is installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "system-packages"
LISTED = [
    line.split("#", 1)[0].strip()
    for line in (ROOT / "requirements" / "system.txt").read_text().splitlines()
    if line.split("#", 1)[0].strip()
]

SHIMS = {
    # Installed: the packages named in $INSTALLED.
    "dpkg-query": 'for p in $INSTALLED; do [ "$p" = "${@: -1}" ] && { printf installed; exit 0; }; done; exit 1',
    "id": 'echo "$FAKE_UID"',
    "apt-get": 'echo "apt-get $*" >> "$APT_LOG"',
}


def run(tmp_path: Path, *, uid: int, installed: list[str], args: tuple[str, ...] = ()) -> tuple[int, str, list[str]]:
    """(exit status, stdout, apt-get calls) of the script with the shims."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in SHIMS.items():
        shim = bin_dir / name
        shim.write_text(f"#!/usr/bin/env bash\n{body}\n")
        shim.chmod(0o755)
    log = tmp_path / "apt.log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "INSTALLED": " ".join(installed),
        "FAKE_UID": str(uid),
        "APT_LOG": str(log),
    }
    done = subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30)
    calls = log.read_text().splitlines() if log.exists() else []
    return done.returncode, done.stdout, calls


def test_the_list_names_chromium_for_the_browser_tests() -> None:
    assert "chromium" in LISTED


def test_nothing_happens_when_every_package_is_installed(tmp_path: Path) -> None:
    assert run(tmp_path, uid=1000, installed=LISTED) == (0, "", [])


def test_as_root_it_updates_once_and_installs_what_is_missing(tmp_path: Path) -> None:
    status, _, calls = run(tmp_path, uid=0, installed=LISTED[1:], args=("postgresql-client", LISTED[0]))
    assert status == 0
    assert calls[0] == "apt-get update -qq"
    assert calls[1:] == [f"apt-get install -y -qq postgresql-client {LISTED[0]}"]


@pytest.mark.parametrize("installed", [[], LISTED[1:]], ids=["none installed", "one missing"])
def test_otherwise_it_stops_with_the_command_to_run(tmp_path: Path, installed: list[str]) -> None:
    status, out, calls = run(tmp_path, uid=1000, installed=installed)
    missing = [p for p in LISTED if p not in installed]
    assert status == 1 and calls == []
    assert out == f"apt-get update && apt-get install -y {' '.join(missing)}\n"
