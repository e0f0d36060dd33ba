"""The units in systemd/ under a real systemd: Debian 12 (systemd 252) booted with systemd-nspawn.

The container (tests/nspawn.py) gets the project installed exactly as systemd/README.md says: its
"Install" block is run as one `set -e` script, with the documented placeholders replaced (the pip
source: wheels built here from this checkout, since the guest is offline from PyPI's point of view;
Ara's URL; the password). Ara is the session's real Ara behind tests/authgate.py, a proxy that
checks the credentials (Basic or Bearer) and can be taken down. Users in the `ara-spool` group
spool runs inside the container; what Ara holds is read from Ara itself.

Shortened for time, and only these: the watchdog check installs a drop-in with WatchdogSec=3s
(60 s in the unit), the timer check a drop-in with OnActiveSec=1s (the timer's first run after a
minute otherwise), retention ages a run's files by 40 days with utime instead of waiting.

ARA_SPOOL_NO_NSPAWN=1 skips this module (it needs root, debootstrap and systemd-container; it
installs the latter two with apt-get when missing). Timings go to tests/artifacts/systemd_real.txt.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.ara import AraAPI, AraServer, free_port
from tests.authgate import AuthGate, basic, bearer
from tests.nspawn import Container, NspawnUnavailable, cache_dir, debian_tree

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "systemd" / "README.md"
SPOOL = "/var/spool/ara-spool"
DAEMON = "ara-spool-flusher.service"
ONESHOT = "ara-spool-flush.service"
TIMER = "ara-spool-flush.timer"
USER = "ansible"
PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]
TOKEN = "tok-" + uuid.uuid4().hex
ALICE = "alice"
# A backlog that takes the daemon over one STATUS period (10 s) to ship, whatever the machine's
# speed: ~750 requests, each delayed SLOW seconds by the gate (>= 15 s), then shipped at full speed.
BIG_HOSTS, BIG_TASKS = 4, 150
SLOW = 0.02
STATUS_RE = re.compile(r"backlog (\d+ event\(s\)) in (\d+) run\(s\); (\d+) shipping; "
                       r"(\d+) event\(s\) shipped since start")

pytestmark = pytest.mark.skipif(os.environ.get("ARA_SPOOL_NO_NSPAWN") == "1",
                                reason="ARA_SPOOL_NO_NSPAWN=1: the real-systemd tests are switched off")

TIMINGS: list[tuple[str, str]] = []


def timing(check: str, text: str) -> None:
    TIMINGS.append((check, text))
    print(f"{check}: {text}")


def wait_until(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


# -- the install, as systemd/README.md says ---------------------------------------------------
def readme_install_script(server: str, password: str) -> str:
    """The README's install block, placeholders replaced; each replacement must match once."""
    text = README.read_text()
    m = re.search(r"^## Install\n.*?^```sh\n(.*?)^```", text, re.M | re.S)
    assert m, "systemd/README.md has no ```sh block under '## Install'"
    script = m.group(1)
    for pattern, repl in [
        (r"^/opt/ara-spool/bin/pip install ara-spool\b.*$",
         "/opt/ara-spool/bin/pip install -q --no-index --find-links /wheels --find-links /deps ara-spool"),
        (r"https://ara\.example\.com", server),
        (r"ARA_API_USERNAME=ansible", f"ARA_API_USERNAME={USER}"),
        (r"'s3cret'", shlex.quote(password)),
    ]:
        script, n = re.subn(pattern, lambda _m, r=repl: r, script, flags=re.M)
        assert n == 1, f"systemd/README.md install block: {pattern!r} matched {n} times"
    return "set -euo pipefail\ncd /src\n" + script


def _copy_checkout(dest: Path) -> None:
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".venv", ".git", "artifacts", "__pycache__", "build", "*.egg-info", ".demo", "results", ".pytest_cache",
        ".ruff_cache"))


def _guest_wheels(tree: Path, work: Path) -> tuple[Path, Path]:
    """(this checkout's wheel, its dependencies' wheels for the guest's Python: cached)."""
    guest_py = sorted(p.name for p in (tree / "usr/bin").glob("python3.*") if re.fullmatch(r"python3\.\d+", p.name))
    assert guest_py, "no python3.N in the Debian tree"
    pyver = guest_py[-1].removeprefix("python")  # 3.11
    src, project = work / "src", work / "wheels"
    _copy_checkout(src)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", str(src), "-w", str(project)], check=True,
                   capture_output=True)
    wheel = next(project.glob("ara_spool-*.whl"))
    deps_key = re.search(r"^dependencies = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S)
    arch = os.uname().machine
    key = hashlib.sha256((deps_key.group(1) if deps_key else "").encode()).hexdigest()[:10]
    deps = cache_dir() / f"wheels-py{pyver}-{arch}-{key}"
    if not deps.exists():
        tmp = Path(str(deps) + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        plat = [f"--platform={p}_{arch}" for p in ("manylinux_2_17", "manylinux2014", "manylinux_2_28",
                                                    "manylinux_2_5", "manylinux1")]
        abi = "cp" + pyver.replace(".", "")
        subprocess.run([*pip, "download", "-q", "--only-binary=:all:", f"--python-version={pyver}",
                        "--implementation=cp", f"--abi={abi}", "--abi=abi3", "--abi=none", *plat, "--platform=any",
                        "-d", str(tmp), str(wheel)], check=True, capture_output=True)
        (tmp / wheel.name).unlink(missing_ok=True)
        os.rename(tmp, deps)
    return project, deps


@pytest.fixture(scope="module")
def gate(ara_server: AraServer):
    g = AuthGate(ara_server.url, free_port()).start()
    g.accept = {basic(USER, PASSWORD)}
    yield g
    g.close()


@pytest.fixture(scope="module")
def box(gate: AuthGate, tmp_path_factory: pytest.TempPathFactory):
    """A booted Debian 12 with ara-spool installed per systemd/README.md, the daemon enabled."""
    t0 = time.monotonic()
    try:
        tree = debian_tree(log=lambda m: print(m, file=sys.stderr))
    except NspawnUnavailable as exc:
        pytest.fail(f"cannot boot a real systemd for these tests: {exc} (ARA_SPOOL_NO_NSPAWN=1 to skip them)")
    t_tree = time.monotonic() - t0
    work = tmp_path_factory.mktemp("systemd-real")
    project, deps = _guest_wheels(tree, work)
    t_wheels = time.monotonic() - t0 - t_tree
    name = f"araspool{os.getpid()}"
    box = Container(tree, name, {"/src": ROOT, "/wheels": project, "/deps": deps}, Path("/var/tmp") / name)
    try:
        t1 = time.monotonic()
        try:
            box.boot()
        except NspawnUnavailable as exc:
            pytest.fail(f"cannot boot a real systemd for these tests: {exc}")
        t_boot = time.monotonic() - t1
        t1 = time.monotonic()
        r = box.sh(readme_install_script(gate.url, PASSWORD), check=False, timeout=300)
        assert r.returncode == 0, f"systemd/README.md install failed (exit {r.returncode}):\n{r.stdout}{r.stderr}"
        timing("install", f"Debian tree {t_tree:.1f}s, wheels {t_wheels:.1f}s, boot {t_boot:.1f}s, "
                          f"README install {time.monotonic() - t1:.1f}s")
        box.sh(f"useradd -m {ALICE} && usermod -aG ara-spool {ALICE}")
        yield box
    finally:
        if box.proc is not None:
            (ROOT / "tests" / "artifacts").mkdir(parents=True, exist_ok=True)
            try:
                (ROOT / "tests/artifacts/systemd_real_journal.txt").write_text(box.journal())
            except Exception:  # noqa: BLE001 - best effort, the container may be gone
                pass
        box.close()
        shutil.rmtree(work, ignore_errors=True)
        out = ROOT / "tests" / "artifacts" / "systemd_real.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(f"{c}: {t}\n" for c, t in TIMINGS))


@pytest.fixture(scope="module")
def api(ara_server: AraServer) -> AraAPI:
    return AraAPI(ara_server.url)


# -- helpers ------------------------------------------------------------------------------------
def spool_as_alice(box: Container, run_id: str, hosts: int, tasks: int, shared: bool = True) -> None:
    """A whole run (run_start ... run_end) written by a group member, as the callback would
    (`shared=False`: without ARA_SPOOL_GROUP_SHARED, as a user who missed that line)."""
    code = ("import sys; from pathlib import Path; sys.path.insert(0, '/src'); from tests.runs import spool_run; "
            f"spool_run(Path({SPOOL!r}), {run_id!r}, hosts={hosts}, tasks={tasks})")
    env = {"ARA_SPOOL_DIR": SPOOL, "PYTHONDONTWRITEBYTECODE": "1"}
    if shared:
        env["ARA_SPOOL_GROUP_SHARED"] = "true"
    box.sh(f"/opt/ara-spool/bin/python -c {shlex.quote(code)}", user=ALICE, env=env)


def results_in_ara(api: AraAPI, run_id: str) -> list[dict[str, Any]]:
    pbs = api.playbooks_for(run_id)
    assert len(pbs) <= 1, f"run {run_id}: {len(pbs)} playbooks in Ara"
    return api.results(pbs[0]["id"]) if pbs else []


def wait_shipped(api: AraAPI, run_id: str, n: int, timeout: float) -> float:
    """Wait until Ara holds the whole run (n results, playbook completed); exactly once."""
    t0 = time.monotonic()

    def done() -> bool:
        # The playbook is completed by the run's last event (run_end): poll that, not the results
        # (listing them all costs the Ara that is shipping to).
        pbs = api.playbooks_for(run_id)
        return bool(pbs) and pbs[0]["status"] == "completed"

    wait_until(done, timeout, f"run {run_id} wholly in Ara", every=0.3)
    results = results_in_ara(api, run_id)
    pairs = [(r["task"], r["host"]) for r in results]
    assert len(results) == n and len(set(pairs)) == n, \
        f"run {run_id}: {len(results)} results, {len(set(pairs))} distinct"
    return time.monotonic() - t0


def state_of(box: Container, run_id: str) -> dict[str, Any]:
    """The run's checkpoint at the Ara it was shipped to last (state file v2: one per destination)."""
    import json

    data = json.loads(box.path(f"{SPOOL}/{run_id}.state").read_text())
    return data["destinations"][data["current"]]


def status_text(box: Container) -> str:
    return box.show(DAEMON, "StatusText")["StatusText"]


def main_pid(box: Container, unit: str = DAEMON) -> int:
    return int(box.show(unit, "MainPID")["MainPID"])


def age_run(box: Container, run_id: str, days: float) -> None:
    old = time.time() - days * 86400
    for suffix in (".jsonl", ".state", ".lock", ".rejected.jsonl", ".flusher.log"):
        p = box.path(f"{SPOOL}/{run_id}{suffix}")
        if p.exists():
            os.utime(p, (old, old))


def write_env(box: Container, extra: str = "") -> None:
    """/etc/ara-spool/flusher.env as the README's step 3 made it, plus `extra` lines."""
    box.sh(f"printf '%s\\n' 'ARA_API_SERVER=http://127.0.0.1:{box_gate_port(box)}' 'ARA_API_USERNAME={USER}' "
           f"{extra} > /etc/ara-spool/flusher.env")


def box_gate_port(box: Container) -> str:
    m = re.search(r"ARA_API_SERVER=http://127\.0\.0\.1:(\d+)", box.path("/etc/ara-spool/flusher.env").read_text())
    assert m
    return m.group(1)


# -- the checks ---------------------------------------------------------------------------------
def test_start_ready_status(box: Container, gate: AuthGate):
    """README install on Debian 12 -> user, group, 2770 spool; the daemon READY (Type=notify) with STATUS."""
    t0 = time.monotonic()
    assert box.sh("id -nG ara-spool").stdout.split() == ["ara-spool"]
    st = box.path(SPOOL).stat()
    assert oct(st.st_mode & 0o7777) == oct(0o2770)
    props = wait_until(lambda: (p := box.show(DAEMON, "ActiveState", "SubState", "Type", "StatusText", "NRestarts"))
                       and STATUS_RE.search(p["StatusText"]) and p, 10, "the daemon's STATUS")
    # Type=notify: "active (running)" only once READY=1 came; then STATUS= came too.
    assert (props["ActiveState"], props["SubState"], props["Type"]) == ("active", "running", "notify"), props
    assert props["NRestarts"] == "0"
    journal = box.journal()
    assert "following /var/spool/ara-spool" in box.journal(DAEMON)
    # Fix 5: nothing in the units is unknown to systemd 252 (no warning on daemon-reload).
    bad = [ln for ln in journal.splitlines() if "ara-spool" in ln and ("Unknown key" in ln or "nknown lvalue" in ln)]
    assert not bad, bad
    # The secret reached the service as a credential, not through its environment.
    env = box.show(DAEMON, "Environment", "EnvironmentFiles")
    assert PASSWORD not in str(env)
    assert PASSWORD not in box.sh(f"tr '\\0' '\\n' < /proc/{main_pid(box)}/environ").stdout
    timing("start + READY + STATUS", f"ok, {props['StatusText']!r} ({time.monotonic() - t0:.1f}s)")


def test_group_member_run_shipped(box: Container, api: AraAPI, gate: AuthGate):
    run_id = "alice-" + uuid.uuid4().hex[:8]
    t0 = time.monotonic()
    spool_as_alice(box, run_id, hosts=3, tasks=4)
    st = box.path(f"{SPOOL}/{run_id}.jsonl").stat()
    assert oct(st.st_mode & 0o777) == oct(0o660)
    assert box.sh(f"stat -c %U:%G {SPOOL}/{run_id}.jsonl").stdout.strip() == f"{ALICE}:ara-spool"
    took = wait_shipped(api, run_id, 12, 30)
    assert gate.seen["ok Basic"] > 0  # the password from /etc/credstore
    timing("group member's run shipped", f"ok, 12 results in Ara {took:.1f}s after spooling "
                                         f"({time.monotonic() - t0:.1f}s)")


def test_status_counts_live_stop_mid_backlog_restart(box: Container, api: AraAPI, gate: AuthGate):
    """STATUS counts while a big run ships (fix 4); stop mid-backlog: exit 0, clean checkpoint;
    after restart, the rest is shipped once."""
    box.sh(f"systemctl restart {DAEMON}")  # STATUS= now, then every 10 s
    run_id = "big-" + uuid.uuid4().hex[:8]
    total = BIG_HOSTS * BIG_TASKS
    # The daemon ships its 4 hosts side by side (a window of 16): slow each request down 4x more
    # than the one-at-a-time checks, so the backlog outlasts the first 10 s STATUS period.
    gate.delay = SLOW * 4
    try:
        t0 = time.monotonic()
        spool_as_alice(box, run_id, hosts=BIG_HOSTS, tasks=BIG_TASKS)
        size = box.path(f"{SPOOL}/{run_id}.jsonl").stat().st_size

        def live() -> re.Match[str] | None:
            m = STATUS_RE.search(status_text(box))
            return m if m and int(m.group(4)) > 0 and int(m.group(2)) > 0 else None

        m = wait_until(live, 25, "STATUS= with events shipped while the run is still pending", every=0.5)
        in_ara = len(results_in_ara(api, run_id))
        assert in_ara < total, "the run was shipped before STATUS said anything: make the backlog bigger"
        timing("STATUS live count (fix 4)", f"ok, {m.group(0)!r} with {in_ara}/{total} results in Ara "
                                             f"({time.monotonic() - t0:.1f}s after spooling)")
        t1 = time.monotonic()
        box.sh(f"systemctl stop {DAEMON}")
        stop_s = time.monotonic() - t1
    finally:
        gate.delay = 0.0
    props = box.show(DAEMON, "ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0",
                     "ExecMainCode": "1"}, props
    st = state_of(box, run_id)
    assert st["clean"] is True and 0 < st["offset"] < size, st
    shipped_before = len(results_in_ara(api, run_id))
    assert 0 < shipped_before < total
    t2 = time.monotonic()
    box.sh(f"systemctl start {DAEMON}")
    took = wait_shipped(api, run_id, total, 120)
    timing("stop mid-backlog + restart", f"ok, stop {stop_s:.2f}s, exit 0, clean checkpoint at "
                                         f"{st['offset']}/{size} bytes with {shipped_before}/{total} results in Ara; "
                                         f"rest shipped {took:.1f}s after restart ({time.monotonic() - t2:.1f}s), "
                                         f"{total} results, none doubled")


def test_watchdog_restarts_a_wedged_daemon(box: Container):
    box.sh(f"mkdir -p /etc/systemd/system/{DAEMON}.d && printf '[Service]\\nWatchdogSec=3s\\n' "
           f"> /etc/systemd/system/{DAEMON}.d/50-test-watchdog.conf && systemctl daemon-reload && "
           f"systemctl restart {DAEMON}")
    try:
        before = box.show(DAEMON, "MainPID", "NRestarts")
        cursor = box.cursor()
        t0 = time.monotonic()
        box.sh(f"kill -STOP {before['MainPID']}")
        after = wait_until(lambda: (p := box.show(DAEMON, "MainPID", "NRestarts", "ActiveState", "SubState"))
                           and p["MainPID"] not in ("0", before["MainPID"]) and p["SubState"] == "running" and p,
                           40, "systemd to kill and restart the stopped daemon")
        took = time.monotonic() - t0
        assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
        journal = box.journal(DAEMON, after=cursor)
        assert "Watchdog timeout" in journal, journal
        time.sleep(3 * 3 + 1)  # three watchdog periods: the new daemon pings, no restart loop
        again = box.show(DAEMON, "MainPID", "NRestarts", "SubState")
        assert (again["MainPID"], again["NRestarts"], again["SubState"]) == \
            (after["MainPID"], after["NRestarts"], "running"), again
        timing("watchdog (WatchdogSec=3s drop-in)", f"ok, SIGSTOP -> watchdog kill -> restarted in {took:.1f}s "
                                                    "(3 s watchdog + RestartSec 10 s), then stable for 10 s")
    finally:
        box.sh(f"rm -f /etc/systemd/system/{DAEMON}.d/50-test-watchdog.conf && systemctl daemon-reload && "
               f"systemctl restart {DAEMON}", check=False)


def test_ara_down_then_up(box: Container, api: AraAPI, gate: AuthGate):
    before = box.show(DAEMON, "MainPID", "NRestarts")
    run_id = "down-" + uuid.uuid4().hex[:8]
    cursor = box.cursor()
    gate.stop()
    try:
        spool_as_alice(box, run_id, hosts=2, tasks=3)
        wait_until(lambda: "retry" in box.journal(DAEMON, after=cursor), 15, "the daemon to retry")
        # STATUS= says so at once (it said "1 shipping" for a whole outage).
        outage = wait_until(lambda: (t := status_text(box)).startswith("Ara unreachable since ") and t, 15,
                            "STATUS= to say Ara is unreachable")
        assert "cannot connect" in outage and STATUS_RE.search(outage), outage
        time.sleep(3)
        now = box.show(DAEMON, "MainPID", "NRestarts", "SubState")
        assert (now["MainPID"], now["NRestarts"], now["SubState"]) == \
            (before["MainPID"], before["NRestarts"], "running"), now
        assert api.playbooks_for(run_id) == []
    finally:
        gate.start()
    t0 = time.monotonic()
    took = wait_shipped(api, run_id, 6, 60)
    # Within a poll (0.5 s) of the first answer, not at the next 10 s STATUS period.
    wait_until(lambda: not status_text(box).startswith("Ara unreachable"), 3, "STATUS= to drop the outage")
    timing("Ara down then up", f"ok, daemon stayed up retrying, STATUS= {outage[:60]!r}...; shipped {took:.1f}s "
                               f"after Ara came back ({time.monotonic() - t0:.1f}s)")


def test_credentials_password_wrong_then_token(box: Container, api: AraAPI, gate: AuthGate):
    run_id = "creds-" + uuid.uuid4().hex[:8]
    before = box.show(DAEMON, "NRestarts")
    try:
        # A wrong password: refused (401), the daemon stays up, keeps the run.
        box.sh("install -m 0600 /dev/stdin /etc/credstore/ara-api-password <<<'wrong-password' && "
               f"systemctl restart {DAEMON}")
        cursor = box.cursor()
        refused = gate.seen["refused Basic"]
        spool_as_alice(box, run_id, hosts=2, tasks=2)
        wait_until(lambda: gate.seen["refused Basic"] > refused, 15, "the gate to refuse the wrong password")
        wait_until(lambda: re.search(rf"run {run_id}: .*HTTP 401 auth refused", box.journal(DAEMON, after=cursor)),
                   15, "the auth error in the journal")
        props = box.show(DAEMON, "SubState", "NRestarts")
        assert props == {"SubState": "running", "NRestarts": before["NRestarts"]}, props
        assert api.playbooks_for(run_id) == []
        # A token instead (Bearer, for a proxy in front of Ara), from /etc/credstore/ara-api-token.
        gate.accept = {bearer(TOKEN)}
        box.sh(f"rm /etc/credstore/ara-api-password && install -m 0600 /dev/stdin /etc/credstore/ara-api-token "
               f"<<<{shlex.quote(TOKEN)} && systemctl restart {DAEMON}")
        took = wait_shipped(api, run_id, 4, 30)
        assert gate.seen["ok Bearer"] > 0
        pid = main_pid(box)
        leak = box.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ; tr '\\0' ' ' < /proc/{pid}/cmdline").stdout
        assert TOKEN not in leak and "wrong-password" not in leak
        timing("credentials", f"ok, wrong password: 401, daemon up, run kept; token from credstore: shipped "
                              f"{took:.1f}s after restart; password (Basic) used by every other check")
    finally:
        gate.accept = {basic(USER, PASSWORD)}
        box.sh(f"rm -f /etc/credstore/ara-api-token && install -m 0600 /dev/stdin /etc/credstore/ara-api-password "
               f"<<<{shlex.quote(PASSWORD)} && systemctl restart {DAEMON}", check=False)


def test_retention_archive_in_the_daemon(box: Container, api: AraAPI):
    """ARA_SPOOL_RETENTION_ACTION=archive under RestrictSUIDSGID=yes (fix 2)."""
    run_id = "archive-" + uuid.uuid4().hex[:8]
    spool_as_alice(box, run_id, hosts=2, tasks=2)
    wait_shipped(api, run_id, 4, 30)
    wait_until(lambda: state_of(box, run_id).get("clean") and not box.sh(
        f"flock -n {SPOOL}/{run_id}.lock true", check=False).returncode, 10, "the shipper to let go of the run")
    original = box.path(f"{SPOOL}/{run_id}.jsonl").read_bytes()
    box.sh(f"systemctl stop {DAEMON}")
    age_run(box, run_id, 40)
    write_env(box, "'ARA_SPOOL_RETENTION_ACTION=archive'")
    try:
        cursor = box.cursor()
        t0 = time.monotonic()
        box.sh(f"systemctl start {DAEMON}")  # retention runs at start, then hourly
        gz = box.path(f"{SPOOL}/archive/{run_id}.jsonl.gz")
        wait_until(lambda: gz.exists() and not box.path(f"{SPOOL}/{run_id}.jsonl").exists(), 15,
                   f"{run_id} archived")
        took = time.monotonic() - t0
        assert gzip.decompress(gz.read_bytes()) == original
        assert box.path(f"{SPOOL}/archive/{run_id}.state").exists()
        for suffix in (".state", ".lock"):
            assert not box.path(f"{SPOOL}/{run_id}{suffix}").exists()
        arch = box.sh(f"stat -c '%a %U:%G' {SPOOL}/archive").stdout.strip()
        assert arch == "2770 ara-spool:ara-spool", arch
        journal = box.journal(DAEMON, after=cursor)
        assert "retention failed" not in journal and "archived" in journal, journal
        timing("retention archive (daemon)", f"ok, archived {took:.1f}s after start; archive/ {arch}")
    finally:
        write_env(box)
        box.sh(f"systemctl restart {DAEMON}")


def test_timer_oneshot_and_prune_delete(box: Container, api: AraAPI):
    old, new = "old-" + uuid.uuid4().hex[:8], "timer-" + uuid.uuid4().hex[:8]
    spool_as_alice(box, old, hosts=1, tasks=2)
    wait_shipped(api, old, 2, 30)
    wait_until(lambda: not box.sh(f"flock -n {SPOOL}/{old}.lock true", check=False).returncode, 10,
               "the daemon to let go of the run")
    # README step 5's alternative: the timer instead of the daemon.
    box.sh(f"systemctl disable --now {DAEMON}")
    age_run(box, old, 40)
    spool_as_alice(box, new, hosts=2, tasks=3)
    box.sh(f"mkdir -p /etc/systemd/system/{TIMER}.d && printf '[Timer]\\nOnActiveSec=1s\\n' "
           f"> /etc/systemd/system/{TIMER}.d/50-test.conf && systemctl daemon-reload")
    t0 = time.monotonic()
    box.sh(f"systemctl enable --now {TIMER}")
    try:
        took = wait_shipped(api, new, 6, 40)
        props = wait_until(lambda: (p := box.show(ONESHOT, "ActiveState", "Result", "ExecMainStatus"))
                           and p["ActiveState"] == "inactive" and p, 30, "the one-shot to finish")
        assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, props
        # ExecStartPost=ara-spool prune: the old shipped run is deleted (the default action).
        for suffix in (".jsonl", ".state", ".lock"):
            assert not box.path(f"{SPOOL}/{old}{suffix}").exists(), suffix
        assert not box.path(f"{SPOOL}/archive/{old}.jsonl.gz").exists()
        assert box.path(f"{SPOOL}/{new}.jsonl").exists()  # shipped, but not idle 30 days
        timer = box.show(TIMER, "ActiveState", "UnitFileState")
        assert timer == {"ActiveState": "active", "UnitFileState": "enabled"}, timer
        timing("timer + one-shot + prune delete", f"ok, run shipped {took:.1f}s after enabling the timer, one-shot "
                                                  f"exit 0, 40-day-old shipped run deleted by prune "
                                                  f"({time.monotonic() - t0:.1f}s)")
    finally:
        box.sh(f"systemctl stop {TIMER}; rm -rf /etc/systemd/system/{TIMER}.d; systemctl daemon-reload",
               check=False)


def test_oneshot_stop_mid_backlog(box: Container, api: AraAPI, gate: AuthGate):
    """`systemctl stop` of the one-shot during a backlog: exit 0, not failed (fix 3); rest shipped once."""
    box.sh(f"systemctl stop {TIMER} {DAEMON}")
    run_id = "stop1-" + uuid.uuid4().hex[:8]
    total = BIG_HOSTS * BIG_TASKS // 2
    spool_as_alice(box, run_id, hosts=BIG_HOSTS, tasks=BIG_TASKS // 2)
    size = box.path(f"{SPOOL}/{run_id}.jsonl").stat().st_size
    gate.delay = SLOW
    try:
        box.sh(f"systemctl start --no-block {ONESHOT}")
        wait_until(lambda: len(results_in_ara(api, run_id)) >= 50, 30, "the one-shot to ship some events", every=1)
        t0 = time.monotonic()
        box.sh(f"systemctl stop {ONESHOT}")
        stop_s = time.monotonic() - t0
    finally:
        gate.delay = 0.0
    props = box.show(ONESHOT, "ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, props
    st = state_of(box, run_id)
    assert st["clean"] is True and 0 < st["offset"] < size, st
    shipped_before = len(results_in_ara(api, run_id))
    t1 = time.monotonic()
    r = box.sh(f"systemctl start {ONESHOT}", check=False, timeout=300)  # Type=oneshot: returns when done
    assert r.returncode == 0, r.stdout + r.stderr
    took = wait_shipped(api, run_id, total, 10)
    timing("one-shot stop mid-backlog (fix 3)", f"ok, stop {stop_s:.2f}s, exit 0, unit inactive (not failed), "
                                                f"clean checkpoint with {shipped_before}/{total} in Ara; next run "
                                                f"shipped the rest in {time.monotonic() - t1:.1f}s (+{took:.1f}s), "
                                                "none doubled")


def test_journal_levels_show_a_wrong_server_and_an_unreadable_file(box: Container, api: AraAPI, gate: AuthGate):
    """`journalctl -p err` showed nothing (every line was PRIORITY=6): now a wrong server and a file
    the daemon cannot read (spooled without ARA_SPOOL_GROUP_SHARED) are errors there, naming the
    file and the fix; after the fix the run is shipped."""
    box.sh(f"systemctl stop {TIMER} {ONESHOT}", check=False)
    private, other = "private-" + uuid.uuid4().hex[:8], "wrongsrv-" + uuid.uuid4().hex[:8]
    cursor = box.cursor()
    box.sh(f"systemctl restart {DAEMON}")
    spool_as_alice(box, private, hosts=1, tasks=2, shared=False)
    path = f"{SPOOL}/{private}.jsonl"
    assert box.sh(f"stat -c '%a %U' {path}").stdout.split() == ["600", ALICE]
    wait_until(lambda: path in box.journal(DAEMON, after=cursor, priority="err"), 20, "the unreadable file's error")
    status = box.sh(f"ARA_SPOOL_DIR={SPOOL} ARA_SPOOL_GROUP_SHARED=true /opt/ara-spool/bin/ara-spool status "
                    f"--run {private}", user=ALICE).stdout
    assert "cannot read" in status and "chmod 600" not in status, status
    # A wrong server: the gate's port with a path where no Ara is (404: not a working Ara).
    box.sh(f"printf '%s\\n' 'ARA_API_SERVER=http://127.0.0.1:{box_gate_port(box)}/not-ara' "
           f"'ARA_API_USERNAME={USER}' > /etc/ara-spool/flusher.env && systemctl restart {DAEMON}")
    try:
        spool_as_alice(box, other, hosts=1, tasks=1)
        errors = wait_until(lambda: (j := box.journal(DAEMON, after=cursor, priority="err")) and other in j and j,
                            20, "the wrong server's error")
        assert "not-ara" in errors, errors
        info = box.journal(DAEMON, after=cursor)
        assert "following /var/spool/ara-spool" in info and "following" not in errors  # INFO stays out of -p err
    finally:
        write_env(box)
        box.sh(f"chmod 660 {path} && systemctl restart {DAEMON}")  # the fix its error printed
    wait_shipped(api, private, 2, 30)
    wait_shipped(api, other, 1, 30)
    timing("journal levels", f"ok, -p err: the unreadable {path} and the wrong server; both shipped after the fix")


def _readme_block(title: str) -> str:
    text = README.read_text()
    m = re.search(rf"^## {title}\n.*?^```sh\n(.*?)^```", text, re.M | re.S)
    assert m, f"systemd/README.md has no ```sh block under '## {title}'"
    return m.group(1)


def test_upgrade_as_the_readme_says(box: Container, api: AraAPI):
    script = _readme_block("Upgrade")
    script, n = re.subn(r"^/opt/ara-spool/bin/pip install --upgrade ara-spool\b.*$",
                        "/opt/ara-spool/bin/pip install -q --upgrade --force-reinstall --no-deps --no-index "
                        "--find-links /wheels ara-spool", script, flags=re.M)
    assert n == 1, "the Upgrade block's pip line"
    box.sh(f"echo '# an old copy' >> /etc/systemd/system/{DAEMON} && systemctl daemon-reload")
    r = box.sh("set -euo pipefail\ncd /src\n" + script, check=False, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert box.path(f"/etc/systemd/system/{DAEMON}").read_text() == (ROOT / "systemd" / DAEMON).read_text()
    props = wait_until(lambda: (p := box.show(DAEMON, "ActiveState", "SubState", "NeedDaemonReload"))
                       and p["SubState"] == "running" and p, 15, "the daemon running again")
    assert props["NeedDaemonReload"] == "no", props
    run_id = "upgraded-" + uuid.uuid4().hex[:8]
    spool_as_alice(box, run_id, hosts=1, tasks=2)
    wait_shipped(api, run_id, 2, 30)
    timing("upgrade (README block)", "ok, units copied again, daemon running, a new run shipped")


def test_uninstall_as_the_readme_says(box: Container):
    """Last: it removes the program. What the README says stays, stays; no restart loop."""
    r = box.sh("set -euo pipefail\n" + _readme_block("Uninstall"), check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    time.sleep(2)
    props = box.show(DAEMON, "LoadState", "ActiveState")
    assert props == {"LoadState": "not-found", "ActiveState": "inactive"}, props
    assert not box.path("/opt/ara-spool").exists()
    for path in (SPOOL, "/etc/ara-spool/flusher.env", "/etc/credstore/ara-api-password",
                 "/etc/sysusers.d/ara-spool.conf", "/etc/tmpfiles.d/ara-spool.conf"):
        assert box.path(path).exists(), path
    assert list(box.path(SPOOL).glob("*.jsonl")), "the spool's runs stay"
    assert box.sh("id -nG ara-spool").stdout.split() == ["ara-spool"]
    cursor = box.cursor()
    time.sleep(3)
    assert "203/EXEC" not in box.journal(after=cursor)
    timing("uninstall (README block)", "ok, units gone, venv gone; spool, user, env file, credstore, sysusers and "
                                       "tmpfiles entries stay")
