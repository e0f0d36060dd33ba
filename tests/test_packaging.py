"""Install as the README says, outside the checkout: a built wheel (with its license and project
URLs) and a git URL, each into a fresh venv, give a working `ara-spool` whose plugins are the
installed ones. Offline: the wheel is built without build isolation (setuptools from the test
extras), and the fresh venvs borrow the test venv's dependencies through a .pth line."""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

SKIP = shutil.ignore_patterns(".git", ".venv*", ".demo", "build", "dist", "*.egg-info", "__pycache__", "artifacts",
                              ".pytest_cache", ".ruff_cache", "bench")
NOBODY = 65534  # another local user


def run(*cmd: str | Path, **kw) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))}: {p.stdout[-2000:]}{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the checkout as a fresh clone has it (a build writes build/ into its source)."""
    src = tmp_path_factory.mktemp("pkg") / "ara-spool"
    shutil.copytree(ROOT, src, ignore=SKIP, symlinks=True)
    return src


def fresh_venv(path: Path) -> Path:
    run(sys.executable, "-m", "venv", "--without-pip", path)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(path), "platbase": str(path)}))
    # Dependencies (aiohttp, ...) from the test venv; its editable ara_spool is not picked up, as a
    # .pth line adds a directory to sys.path without running the .pth files inside it.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return path / "bin"


def pip_install(bin_dir: Path, *what: str) -> None:
    run(sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "-q", "--no-deps", "--no-index",
        "--no-build-isolation", "--disable-pip-version-check", *what)


def check_installed(bin_dir: Path, tmp: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARA_", "ANSIBLE_", "PYTHON"))}
    env["ARA_SPOOL_DIR"] = str(tmp / "spool")
    out = run(bin_dir / "ara-spool", "--version", env=env, cwd=tmp).stdout
    assert out.strip() == "ara-spool 0.1.0"
    prefix = str(bin_dir.parent)
    exports = run(bin_dir / "ara-spool", "env", env=env, cwd=tmp).stdout.splitlines()
    assert len(exports) == 3
    for line in exports:  # the installed plugins and role, not the checkout's
        path = line.split("=", 1)[1].split("$")[0].strip("'")
        assert path.startswith(prefix) and Path(path).is_dir(), line
    assert (Path(exports[0].split("=", 1)[1].split("$")[0]) / "ara_spool.py").is_file()
    emit = ("emit", "--run", "pkg-1", "--task", "t", "--host", "h", "--status", "ok")
    run(bin_dir / "ara-spool", *emit, env=env, cwd=tmp)
    table = run(bin_dir / "ara-spool", "status", env=env, cwd=tmp).stdout
    assert table.splitlines()[1].split()[:3] == ["pkg-1", "1", "0"], table


def test_wheel_has_license_and_urls_and_works_outside_the_checkout(source, tmp_path):
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "-w", tmp_path / "dist", source)
    [wheel] = (tmp_path / "dist").glob("ara_spool-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = email.parser.Parser().parsestr(zf.read("ara_spool-0.1.0.dist-info/METADATA").decode())
        license_text = zf.read("ara_spool-0.1.0.dist-info/licenses/LICENSE").decode()
    assert "GNU GENERAL PUBLIC LICENSE" in license_text and "Version 3, 29 June 2007" in license_text
    assert license_text == (ROOT / "LICENSE").read_text()
    assert meta["License-Expression"] == "GPL-3.0-or-later" and meta["License-File"] == "LICENSE"
    assert meta.get_all("Project-URL") and meta["Author"]
    for packaged in ("ara_spool/handlers/plugins/callback/ara_spool.py", "ara_spool/handlers/plugins/action/"
                     "ara_spool_event.py", "ara_spool/handlers/roles/ara_spool/handlers/main.yml",
                     "ara_spool/flusher/cli.py", "ara_spool/spool/writer.py"):
        assert packaged in names, packaged
    bin_dir = fresh_venv(tmp_path / "venv")
    pip_install(bin_dir, str(wheel))
    check_installed(bin_dir, tmp_path)


def test_install_from_a_git_url(source, tmp_path):
    repo = tmp_path / "ara-spool"
    shutil.copytree(source, repo, symlinks=True)
    git = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        run("git", "-C", repo, *cmd, env=git)
    bin_dir = fresh_venv(tmp_path / "venv")
    pip_install(bin_dir, f"git+file://{repo}")
    check_installed(bin_dir, tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="the README's sentence is about installing as root")
def test_installing_from_a_checkout_as_root_leaves_dirs_another_user_cannot_write(source):
    """README: installing from a checkout as root leaves a root-owned `ara_spool.egg-info` and
    `build/` in it, where another user's install from it then gets "Permission denied"; removing
    them is the remedy."""
    base = Path(tempfile.mkdtemp(prefix="pkg-root-"))
    try:
        base.chmod(0o755)  # another user reaches the checkout, as a shared one is reached
        src = base / "ara-spool"
        shutil.copytree(source, src, symlinks=True, ignore=SKIP)  # the other tests' builds wrote in source
        assert not (src / "ara_spool.egg-info").exists() and not (src / "build").exists()
        for path in (src, *src.rglob("*")):
            os.lchown(path, NOBODY, NOBODY)  # the checkout's owner: not root
        bin_dir = fresh_venv(base / "venv")
        pip_install(bin_dir, str(src))
        left = {d: (src / d).stat() for d in ("ara_spool.egg-info", "build")}
        assert all(st.st_uid == 0 and not st.st_mode & 0o022 for st in left.values()), left
        # What the owner's build does first: write its metadata there. As the owner: refused.
        probe = subprocess.run(["/bin/sh", "-c", f"touch '{src}/ara_spool.egg-info/PKG-INFO'"], user=NOBODY,
                               group=NOBODY, capture_output=True, text=True, timeout=30)
        assert probe.returncode != 0 and "Permission denied" in probe.stderr, probe.stderr
        for d in left:  # the remedy
            shutil.rmtree(src / d)
        probe = subprocess.run(["/bin/sh", "-c", f"mkdir '{src}/ara_spool.egg-info' '{src}/build'"], user=NOBODY,
                               group=NOBODY, capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0, probe.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)
