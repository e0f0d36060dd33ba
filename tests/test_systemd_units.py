"""The units in systemd/: `systemd-analyze verify`, the sandbox's exposure score, sysusers/tmpfiles."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

UNITS_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNITS = ["ara-spool-flusher.service", "ara-spool-flush.service", "ara-spool-flush.timer"]
SERVICES = [u for u in UNITS if u.endswith(".service")]
INSTALLED_EXEC = "/opt/ara-spool/bin/ara-spool"
# `systemd-analyze security --offline=yes` overall exposure measured for both services (252).
MAX_EXPOSURE = 1.1
# Settings newer than the systemd that verifies them are warned about, not errors (254+).
NEWER_KEYS = {"RestartSteps": 254, "RestartMaxDelaySec": 254}


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found: install systemd (Debian: apt-get install systemd; .ci/run does "
                    "it) to check the units in systemd/")
    return path


def _systemd_version(analyze: str) -> int:
    out = subprocess.run([analyze, "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.match(r"systemd (\d+)", out).group(1))


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """The units as installed, with ExecStart pointing at this venv's ara-spool (verify needs it to exist)."""
    exe = Path(sys.executable).parent / "ara-spool"
    assert exe.exists(), exe
    for name in UNITS:
        text = (UNITS_DIR / name).read_text()
        # systemd splits ExecStart on spaces: a path with one (a checkout in "my dir") is quoted.
        shown = f'"{exe}"' if " " in str(exe) else str(exe)
        (tmp_path / name).write_text(text.replace(INSTALLED_EXEC, shown))
    return tmp_path


def test_units_verify(units: Path):
    analyze = _systemd_analyze()
    version = _systemd_version(analyze)
    r = subprocess.run([analyze, "verify", *UNITS], cwd=units, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for line in (r.stdout + r.stderr).splitlines():
        m = re.search(r"Unknown key '(\w+)'", line)
        if m and m.group(1) in NEWER_KEYS and version < NEWER_KEYS[m.group(1)]:
            continue
        pytest.fail(f"systemd-analyze verify (systemd {version}) warned: {line}")


@pytest.mark.parametrize("service", SERVICES)
def test_service_exposure(units: Path, service: str):
    analyze = _systemd_analyze()
    r = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", service], cwd=units,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout[-2000:]
    exposure = float(m.group(1))
    print(f"{service}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, r.stdout


def test_units_contract():
    flusher = (UNITS_DIR / "ara-spool-flusher.service").read_text()
    assert re.search(r"^Type=notify$", flusher, re.M)
    assert re.search(r"^ExecStart=\S+ flush --follow$", flusher, re.M)
    assert re.search(r"^WatchdogSec=", flusher, re.M)
    assert re.search(r"^Restart=on-failure$", flusher, re.M)
    for name in SERVICES:
        text = (UNITS_DIR / name).read_text()
        # Secrets come from credentials (flusher/config.py reads these names), never Environment=.
        assert re.search(r"^LoadCredential=ara-api-password$", text, re.M)
        assert re.search(r"^LoadCredential=ara-api-token$", text, re.M)
        env = "\n".join(re.findall(r"^Environment=.*$", text, re.M))
        assert not re.search(r"PASSWORD|TOKEN", env), env
        assert "ReadWritePaths=/var/spool/ara-spool" in text
        assert "Environment=ARA_SPOOL_DIR=/var/spool/ara-spool" in text


def test_sysusers_and_tmpfiles_make_the_shared_spool(tmp_path: Path):
    _systemd_analyze()
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for f in ("passwd", "group"):
        shutil.copy(f"/etc/{f}", root / "etc" / f)
    subprocess.run(["systemd-sysusers", f"--root={root}", str(UNITS_DIR / "ara-spool.sysusers.conf")],
                   check=True, capture_output=True)
    entry = [ln for ln in (root / "etc/group").read_text().splitlines() if ln.startswith("ara-spool:")]
    assert len(entry) == 1
    gid = int(entry[0].split(":")[2])
    subprocess.run(["systemd-tmpfiles", "--create", f"--root={root}", str(UNITS_DIR / "ara-spool.tmpfiles.conf")],
                   check=True, capture_output=True)
    st = (root / "var/spool/ara-spool").stat()
    assert stat.S_IMODE(st.st_mode) == 0o2770
    assert st.st_gid == gid
