"""A real systemd for the tests: a Debian 12 tree booted with systemd-nspawn, driven with nsenter.

- The tree (`debootstrap --variant=minbase`, systemd + dbus + python3 + python3-venv) is built
  once per machine into the cache ($ARA_SPOOL_TEST_CACHE, else $XDG_CACHE_HOME/ara-spool, else
  ~/.cache/ara-spool), under a lock, into a temporary name renamed when complete: an interrupted
  build is never taken for a tree.
- Each boot runs on an overlay (the cached tree read-only below, a temporary dir above), so the
  cache stays clean; where overlayfs is not available, on a copy.
- `systemd-nspawn -D ROOT -b --register=no --keep-unit` works as root without systemd on the
  host (no system bus: hence --register=no); the container shares the host's network, so a server
  on 127.0.0.1 is reachable from both sides. Commands run in it through `nsenter -t <its PID 1> -a`
  with a clean environment (the host's PIP_*, ARA_* and so on must not leak in).
- close() stops the container (poweroff, then SIGKILL of nspawn), unmounts and removes the overlay,
  whatever state the tests left it in.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SUITE = "bookworm"
PACKAGES = ["systemd", "dbus", "python3", "python3-venv"]
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PRIORITIES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]  # syslog's, by number
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NspawnUnavailable(RuntimeError):
    """This machine cannot boot the container; the message says what to install or do."""


def cache_dir() -> Path:
    env = os.environ.get("ARA_SPOOL_TEST_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ara-spool"


def _mirror() -> str:
    """The Debian mirror this machine's apt uses (one-line or deb822 sources), else Debian's."""
    sources = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*"))
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            if "security" not in m.group(1) and not m.group(2).endswith(("-security", "-updates")):
                return m.group(1)
        for m in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
            if "security" not in m.group(1):
                return m.group(1)
    return DEFAULT_MIRROR


def _need_tools() -> None:
    """debootstrap, systemd-nspawn and nsenter; installed with apt-get when missing (as CI does)."""
    if os.geteuid() != 0:
        raise NspawnUnavailable("booting a systemd container needs root (systemd-nspawn, nsenter, mount)")
    missing = [t for t in ("debootstrap", "systemd-nspawn", "nsenter") if shutil.which(t) is None]
    if missing and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap", "systemd-container", "util-linux"],
                       env=env, capture_output=True)
        missing = [t for t in ("debootstrap", "systemd-nspawn", "nsenter") if shutil.which(t) is None]
    if missing:
        raise NspawnUnavailable(f"missing {', '.join(missing)}: apt-get install debootstrap systemd-container "
                                "(.ci/run does it)")


def debian_tree(log=print) -> Path:
    """The cached Debian tree, built on first use (~1.5 min and ~300 MB, from the mirror apt uses)."""
    _need_tools()
    key = hashlib.sha256(" ".join([SUITE, "minbase", *PACKAGES]).encode()).hexdigest()[:10]
    cache = cache_dir()
    tree = cache / f"debian-{SUITE}-{key}"
    if (tree / "usr/lib/systemd/systemd").exists() or (tree / "lib/systemd/systemd").exists():
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session building the same tree: wait for it
        if tree.exists():
            return tree
        tmp = Path(tempfile.mkdtemp(prefix=f".{tree.name}.", dir=cache))
        mirror = _mirror()
        log(f"building the Debian {SUITE} tree for the systemd tests into {tree} (from {mirror}, once per machine)")
        t0 = time.monotonic()
        r = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(tmp),
                            mirror], capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise NspawnUnavailable(f"debootstrap {SUITE} from {mirror} failed (exit {r.returncode}): "
                                    f"{(r.stdout + r.stderr)[-1500:]}")
        os.rename(tmp, tree)
        log(f"Debian tree built in {time.monotonic() - t0:.0f}s")
    return tree


class Container:
    """One booted container on an overlay of the cached tree."""

    def __init__(self, tree: Path, name: str, binds_ro: dict[str, Path], workdir: Path) -> None:
        self.tree = tree
        self.name = name
        self.binds_ro = binds_ro
        self.workdir = workdir
        self.root = workdir / "root"
        self.log_path = workdir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1: int | None = None
        self._overlay = False

    # -- lifecycle --------------------------------------------------------------------------
    def boot(self, timeout: float = 90) -> Container:
        self.root.mkdir(parents=True)
        upper, work = self.workdir / "upper", self.workdir / "work"
        upper.mkdir()
        work.mkdir()
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={self.tree},upperdir={upper},workdir={work}", str(self.root)],
                           capture_output=True, text=True)
        if r.returncode == 0:
            self._overlay = True
        else:  # no overlayfs here (e.g. a nested container): a private copy instead
            subprocess.run(["cp", "-a", "--reflink=auto", f"{self.tree}/.", str(self.root)], check=True)
        cmd = ["systemd-nspawn", "-D", str(self.root), "-b", "--register=no", "--keep-unit", "-M", self.name,
               "--console=read-only"]
        cmd += [f"--bind-ro={src}:{dest}" for dest, src in self.binds_ro.items()]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.pid1 is None:
            if self.proc.poll() is not None:
                raise NspawnUnavailable(f"systemd-nspawn exited {self.proc.returncode}: {self.console()[-2000:]}")
            if time.monotonic() > deadline:
                raise NspawnUnavailable(f"the container did not start in {timeout}s: {self.console()[-2000:]}")
            # nspawn's child becomes the container's PID 1 once it has exec'd systemd.
            pid1 = next((c for c in _children(self.proc.pid) if _comm(c) == "systemd"), None)
            if pid1 is not None:
                self.pid1 = pid1
            else:
                time.sleep(0.1)
        state = ""
        while state not in ("running", "degraded"):
            # Until systemd listens on its private socket, systemctl fails at once: ask again.
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise NspawnUnavailable(f"the container's systemd is {state!r} after {timeout}s: "
                                        f"{self.console()[-2000:]}")
            r = self.sh("systemctl is-system-running --wait", check=False, timeout=left)
            state = r.stdout.strip()
            if state not in ("running", "degraded"):
                time.sleep(0.2)
        return self

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.pid1 is not None:
                self.sh("systemctl poweroff --no-block", check=False, timeout=10)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
        if self._overlay:
            if subprocess.run(["umount", str(self.root)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.root)], capture_output=True)
            self._overlay = False
        shutil.rmtree(self.workdir, ignore_errors=True)

    def console(self) -> str:
        try:
            return self.log_path.read_bytes().decode(errors="replace")
        except OSError:
            return ""

    # -- inside -----------------------------------------------------------------------------
    def sh(self, script: str, *, check: bool = True, user: str | None = None, env: dict[str, str] | None = None,
           input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a bash script in the container (as root, or as `user` with runuser), clean env."""
        assert self.pid1 is not None, "the container is not booted"
        guest_env = {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "TERM": "dumb"}
        guest_env.update(env or {})
        argv = ["bash", "-c", script]
        if user is not None:
            exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
            argv = ["runuser", "-u", user, "--", "bash", "-c", f"export {exports}; {script}" if exports else script]
        cmd = ["nsenter", "-t", str(self.pid1), "-a", "env", "-i",
               *(f"{k}={v}" for k, v in guest_env.items()), *argv]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"in the container, exit {r.returncode}: {script}\n{r.stdout}{r.stderr}")
        return r

    def path(self, guest_path: str) -> Path:
        """The host path of a file in the container (the overlay's merged view)."""
        return self.root / guest_path.lstrip("/")

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """`systemctl show -p ...` as a dict."""
        out = self.sh(f"systemctl show {shlex.quote(unit)} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str | None = None, after: str | None = None, priority: str | None = None) -> str:
        """The journal of this boot (of one unit), after a cursor() if given, at `priority` or
        more urgent (`err`: journalctl -p err) if given; messages only."""
        args = "journalctl -b --no-pager " + ("-o json" if priority else "-o cat")
        if unit:
            args += f" -u {shlex.quote(unit)}"
        if after:
            args += f" --after-cursor={shlex.quote(after)}"
        out = self.sh(args, check=False).stdout
        if not priority:
            return out
        # journalctl 252 with both --after-cursor and -p shows nothing: filter on PRIORITY here.
        most = PRIORITIES.index(priority)
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        return "".join(f"{e.get('MESSAGE')}\n" for e in entries if int(e.get("PRIORITY", 6)) <= most)

    def cursor(self) -> str:
        """The journal's position now: journal(after=...) then shows only what came later."""
        out = self.sh("journalctl -b -n 0 --show-cursor --no-pager", check=False).stdout
        m = re.search(r"-- cursor: (\S+)", out)
        if m is None:
            out = self.sh("journalctl -b -n 1 --show-cursor --no-pager", check=False).stdout
            m = re.search(r"-- cursor: (\S+)", out)
        assert m, out
        return m.group(1)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out
