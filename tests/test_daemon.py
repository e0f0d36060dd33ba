"""`ara-spool flush --follow` in a subprocess against a real Ara; retention, size cap, shared spool."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ara_spool.spool import retention, schema, writer
from ara_spool.spool.lock import try_lock
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.state import load

from tests.ara import AraServer, free_port
from tests.runs import assert_once_in_host_order, emit_events, host_of, spool_run

EXIT_BUSY = 6
EXIT_UNREACHABLE = 3


def journal_stream(path: Path) -> str:
    """JOURNAL_STREAM as systemd sets it for a unit whose stderr is this file (created if need be)."""
    path.touch()
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def wait_until(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Follower:
    """`python -m ara_spool.flusher flush --follow` as a subprocess; its log in a file."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        env = dict(env, ARA_SPOOL_LOG_LEVEL="INFO")
        self._log_start = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "ara_spool.flusher", "flush", "--follow",
                                          "--poll", "0.2", *args], env=env, stdout=subprocess.DEVNULL, stderr=fh)
        # SIGTERM is only ours to handle once the loop runs: wait for its first log line.
        wait_until(lambda: "following" in self.text() or self.proc.poll() is not None, 20, "the daemon to start")
        assert self.proc.poll() is None, self.text()

    def text(self) -> str:
        return self.log.read_bytes()[self._log_start:].decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[int, float]:
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def followers(tmp_path: Path):
    started: list[Follower] = []

    def start(env: dict[str, str], *args: str) -> Follower:
        f = Follower(env, tmp_path / "daemon.log", *args)
        started.append(f)
        return f

    yield start
    for f in started:
        f.kill()


def results_of(ara, run_id: str) -> list[dict[str, Any]]:
    pbs = ara.playbooks_for(run_id)
    assert len(pbs) <= 1, f"run {run_id}: {len(pbs)} playbooks"
    return ara.results(pbs[0]["id"]) if pbs else []


def event_started(ev: dict[str, Any]) -> Any:
    return schema.parse_time(ev["ts"]).timestamp() - ev["event"].get("duration", 0)


def assert_exactly_once_in_order(ara, run_id: str, spooled: list[dict[str, Any]]) -> None:
    """Once each, per host in spool order (`started`; an explicit event's is its ts less its duration)."""
    want = [(host_of(e), schema.to_iso(event_started(e)) if "event" in e else e["started"]) for e in spooled]
    assert_once_in_host_order(ara, run_id, want, key="started")


# -- follow mode against the session's Ara -------------------------------------------------
def test_follow_ships_appends_new_runs_and_run_end(cli_env, ara, spool_dir, followers):
    d = followers(cli_env)
    # Another process appends (the CLI's emit): it reaches Ara within a few seconds.
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "ara_spool.flusher", "emit", "--run", "follow-a", "--task", "deploy",
                    "--host", "web1", "--status", "ok", "--duration", "0.5", "--details", '{"n": 1}'],
                   env=cli_env, check=True)
    wait_until(lambda: len(results_of(ara, "follow-a")) == 1, 10, "the first event in Ara")
    first_latency = time.monotonic() - t0

    # Appends to a run the daemon already knows: latency from append to Ara.
    latencies = []
    spooled = []
    for i in range(5):
        t0 = time.monotonic()
        spooled += emit_events(spool_dir, "follow-a", 1)
        wait_until(lambda n=i + 2: len(results_of(ara, "follow-a")) == n, 10, f"event {i + 2}", every=0.02)
        latencies.append(time.monotonic() - t0)
    assert max(latencies) < 3.0, latencies

    # A new run file is found, its run_end finalizes the playbook.
    run_b = spool_run(spool_dir, "follow-b", hosts=2, tasks=3)
    wait_until(lambda: ara.playbooks_for("follow-b") and ara.playbooks_for("follow-b")[0]["status"] == "completed",
               15, "run follow-b completed in Ara")
    assert_exactly_once_in_order(ara, "follow-b", run_b)
    wait_until(lambda: "run follow-b: finished in Ara" in d.text(), 5, "the run-end log line")
    assert load(RunPaths.of(spool_dir, "follow-b")).ended

    rc, took = d.stop()
    assert rc == 0, d.text()
    assert took < 3.0
    assert len(results_of(ara, "follow-a")) == 6
    print(f"follow latency: first event (new run, incl. emit process start) {first_latency:.2f}s; "
          f"appends {min(latencies):.2f}-{max(latencies):.2f}s (poll 0.2s); stop after SIGTERM {took:.2f}s")


def test_sigterm_mid_backlog_then_restart_no_duplicate(cli_env, ara, spool_dir, followers):
    run_id = "follow-backlog"
    spooled = spool_run(spool_dir, run_id, hosts=4, tasks=60)  # 240 results
    d = followers(cli_env)
    wait_until(lambda: len(results_of(ara, run_id)) >= 20, 30, "some results shipped")
    rc, took = d.stop(signal.SIGTERM)
    assert rc == 0, d.text()
    assert took < 5.0, f"stop took {took:.1f}s"
    st = load(RunPaths.of(spool_dir, run_id))
    assert st.clean, "a clean stop writes a clean checkpoint"
    assert not st.ended and 20 <= st.shipped, st
    shipped_at_stop = len(results_of(ara, run_id))
    assert shipped_at_stop < len(spooled), "the backlog was not interrupted: make it larger"

    d2 = followers(cli_env)
    wait_until(lambda: load(RunPaths.of(spool_dir, run_id)).ended, 60, "the run shipped to its end")
    rc, _ = d2.stop(signal.SIGINT)
    assert rc == 0
    assert_exactly_once_in_order(ara, run_id, spooled)
    pb = ara.playbook_for(run_id)
    assert pb["status"] == "completed"
    assert len(ara.all("tasks", playbook=pb["id"])) == 60
    print(f"SIGTERM mid-backlog: stopped in {took:.2f}s at {shipped_at_stop}/{len(spooled)} results")


def test_daemon_and_oneshot_on_the_same_run_no_duplicate(cli_env, ara, spool_dir, followers):
    run_id = "follow-shared"
    d = followers(cli_env)
    spooled: list[dict[str, Any]] = []
    codes = []
    for _ in range(4):
        spooled += emit_events(spool_dir, run_id, 40)
        # A one-shot flush of the same run while the daemon ships it: one of them waits.
        r = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "-q", "--run", run_id,
                            "--timeout", "60"], env=cli_env, capture_output=True, text=True)
        codes.append(r.returncode)
        assert r.returncode == 0, r.stderr
        # The one-shot returns once the run is in Ara up to where the spool ended when it started.
        assert load(RunPaths.of(spool_dir, run_id)).offset >= os.path.getsize(spool_dir / f"{run_id}.jsonl")
    rc, _ = d.stop()
    assert rc == 0
    assert_exactly_once_in_order(ara, run_id, spooled)


def test_oneshot_waits_for_or_skips_a_run_the_daemon_holds(cli_env, ara, spool_dir, followers):
    run_id = "follow-held"
    spooled = emit_events(spool_dir, run_id, 10)
    # The daemon talks to a port where nothing listens: it holds the run, retrying in backoff.
    dead = dict(cli_env, ARA_API_SERVER=f"http://127.0.0.1:{free_port()}")
    d = followers(dead, "--max-backoff", "0.5")
    wait_until(lambda: "cannot connect" in d.text(), 10, "the daemon to retry")
    assert try_lock(RunPaths.of(spool_dir, run_id)) is None, "the daemon holds the run's lock"

    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "-q", "--run", run_id, "--no-wait"],
                       env=cli_env, capture_output=True, text=True)
    no_wait_took = time.monotonic() - t0
    assert r.returncode == EXIT_BUSY, r.stderr
    assert "another flusher" in r.stderr
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "-q", "--run", run_id, "--timeout", "1.5"],
                       env=cli_env, capture_output=True, text=True)
    waited = time.monotonic() - t0
    # Busy (6), or unreachable (3) quoting the holder's own error: either way it waited, then gave up.
    assert r.returncode in (EXIT_BUSY, EXIT_UNREACHABLE), r.stderr
    assert "another flusher" in r.stderr or "(shipping flusher)" in r.stderr, r.stderr
    assert 1.4 <= waited < 6, waited
    assert results_of(ara, run_id) == []

    # SIGTERM while asleep in backoff: no request in flight, so it stops at once.
    rc, took = d.stop()
    assert rc == 0 and took < 3.0, (rc, took, d.text())
    assert load(RunPaths.of(spool_dir, run_id)).clean
    r = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "-q", "--run", run_id, "--no-wait"],
                       env=cli_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert_exactly_once_in_order(ara, run_id, spooled)
    print(f"--no-wait returned in {no_wait_took:.2f}s; SIGTERM during backoff: exit in {took:.2f}s")


def test_ara_down_then_up_nothing_lost(cli_env, spool_dir, followers, tmp_path):
    from tests.ara import AraAPI

    server = AraServer(tmp_path / "ara2", workers=1)
    server.start()
    try:
        api = AraAPI(server.url)
        env = dict(cli_env, ARA_API_SERVER=server.url, ARA_API_TIMEOUT="5")
        d = followers(env, "--max-backoff", "0.5")
        run_id = "follow-outage"
        spooled = spool_run(spool_dir, run_id, hosts=2, tasks=10, end=None)
        wait_until(lambda: len(results_of(api, run_id)) == 20, 30, "the first part shipped")

        server.stop()  # Ara down
        more = spool_run(spool_dir, run_id, hosts=2, tasks=10, start_run=False, end="completed")
        wait_until(lambda: "cannot connect" in d.text(), 15, "the daemon to notice the outage")
        time.sleep(1.0)  # several retries while down
        assert d.proc.poll() is None
        assert not load(RunPaths.of(spool_dir, run_id)).ended

        server.start()  # same port, same database
        wait_until(lambda: load(RunPaths.of(spool_dir, run_id)).ended, 30, "the rest shipped after the outage")
        rc, _ = d.stop()
        assert rc == 0
        assert_exactly_once_in_order(api, run_id, spooled + more)
        pb = api.playbook_for(run_id)
        assert pb["status"] == "completed"
        assert len(api.all("plays", playbook=pb["id"])) == 2
        assert len(api.all("tasks", playbook=pb["id"])) == 20
    finally:
        server.cleanup()


def test_sd_notify_ready_status_watchdog_stopping_and_journal_logs(cli_env, spool_dir, followers, tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    messages: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                return messages

    try:
        env = dict(cli_env, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000",
                   JOURNAL_STREAM=journal_stream(tmp_path / "daemon.log"))
        emit_events(spool_dir, "follow-notify", 3)
        d = followers(env)
        wait_until(lambda: any("WATCHDOG=1" in m for m in drain()) and
                   sum("WATCHDOG=1" in m for m in messages) >= 2, 10, "two watchdog pings")
        rc, _ = d.stop()
        assert rc == 0
        drain()
    finally:
        sock.close()
    assert messages[0].startswith("READY=1"), messages[:3]
    status = [m for m in messages if m.startswith("STATUS=backlog")]
    assert status and "run(s)" in status[0]
    assert any(m.startswith("STOPPING=1") for m in messages)
    # Under systemd (JOURNAL_STREAM names our stderr) journald stamps lines: ours carry no timestamp,
    # and their level as a syslog `<N>` prefix (journalctl -p err).
    lines = [ln for ln in d.text().splitlines() if ln.strip()]
    assert lines and all(ln.startswith(("<6>INFO ", "<4>WARNING ", "<3>ERROR ")) for ln in lines), lines[:3]


def test_daemon_retires_shipped_runs(cli_env, ara, spool_dir, followers):
    old = spool_run(spool_dir, "ret-done", hosts=1, tasks=2)
    spool_run(spool_dir, "ret-open", hosts=1, tasks=2, end=None)
    d = followers(cli_env, "--retention-days", "0", "--retention-interval", "0.3")
    wait_until(lambda: not [p for p in spool_dir.iterdir() if p.name.startswith(("ret-done", ".ret-done"))], 20,
               "every file of the ended run retired")
    # Not ended: kept however old, and still followed.
    time.sleep(0.7)
    assert (spool_dir / "ret-open.jsonl").exists()
    spool_run(spool_dir, "ret-open", hosts=1, tasks=1, start_run=False, plays=0, end="completed")
    wait_until(lambda: not (spool_dir / "ret-open.jsonl").exists(), 20, "ret-open retired after its end")
    rc, _ = d.stop()
    assert rc == 0
    assert_exactly_once_in_order(ara, "ret-done", old)
    assert "retention: 1 run(s) removed" in d.text()


# -- retention and the size cap, in-process -----------------------------------------------
def _shipped(spool_dir: Path, run_id: str) -> None:
    """Mark a spooled run as wholly shipped (as the flusher leaves it)."""
    from ara_spool.spool.state import RunState, save

    paths = RunPaths.of(spool_dir, run_id)
    st = RunState(run_id, offset=os.path.getsize(paths.spool), ended=True, clean=True)
    save(paths, st)


def test_retention_apply_delete_archive_and_keep(spool_dir):
    for run_id in ("r-old", "r-arch", "r-pending", "r-held", "r-young"):
        emit_events(spool_dir, run_id, 3)
        if run_id != "r-pending":
            _shipped(spool_dir, run_id)
    emit_events(spool_dir, "r-pending", 1)  # pending lines: never retired
    (spool_dir / "r-arch.rejected.jsonl").write_text('{"reason":"x"}\n')
    now = time.time() + 3 * 86400
    held = try_lock(RunPaths.of(spool_dir, "r-held"))
    try:
        os.utime(spool_dir / "r-young.jsonl", (now, now))
        report = retention.apply(spool_dir, retention.Retention(days=2), now=now)
        assert sorted(report.retired) == ["r-arch", "r-old"]
        assert report.kept == 3
    finally:
        held.close()
    left = sorted(p.name for p in spool_dir.iterdir())
    assert not [n for n in left if n.startswith(("r-old", "r-arch"))], left
    assert {"r-pending.jsonl", "r-held.jsonl", "r-young.jsonl"} <= set(left)
    assert not [n for n in left if n.endswith(".retiring")]

    emit_events(spool_dir, "r-arch2", 4)
    _shipped(spool_dir, "r-arch2")
    (spool_dir / "r-arch2.rejected.jsonl").write_text('{"reason":"x"}\n')
    want = (spool_dir / "r-arch2.jsonl").read_bytes()
    report = retention.apply(spool_dir, retention.Retention(days=2, action="archive"), now=now)
    assert sorted(report.retired) == ["r-arch2", "r-held"]  # r-held: released since the first pass
    arch = spool_dir / retention.ARCHIVE_DIR
    assert gzip.decompress((arch / "r-arch2.jsonl.gz").read_bytes()) == want
    assert gzip.decompress((arch / "r-arch2.rejected.jsonl.gz").read_bytes()) == b'{"reason":"x"}\n'
    assert load(RunPaths.of(arch, "r-arch2")).ended
    assert not (spool_dir / "r-arch2.jsonl").exists()
    # Off by default: nothing retired.
    assert retention.apply(spool_dir, retention.Retention(), now=now + 1e9).retired == []


def test_size_cap_warns_or_refuses(spool_dir, monkeypatch, caplog):
    emit_events(spool_dir, "cap", 20)
    size = os.path.getsize(spool_dir / "cap.jsonl")
    monkeypatch.setenv("ARA_SPOOL_MAX_BYTES", str(size + 50))
    with caplog.at_level("WARNING", logger="ara_spool.retention"):
        writer.append("cap", "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=spool_dir)
    assert os.path.getsize(spool_dir / "cap.jsonl") > size, "policy warn keeps the event"
    assert "over ARA_SPOOL_MAX_BYTES" in caplog.text
    grown = os.path.getsize(spool_dir / "cap.jsonl")
    monkeypatch.setenv("ARA_SPOOL_FULL_POLICY", "refuse")
    with pytest.raises(retention.SpoolFull, match="refused"):
        writer.append("cap", "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=spool_dir)
    assert os.path.getsize(spool_dir / "cap.jsonl") == grown, "a refused event writes nothing"
    monkeypatch.setenv("ARA_SPOOL_MAX_BYTES", "1G")
    writer.append("cap", "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=spool_dir)
    assert os.path.getsize(spool_dir / "cap.jsonl") > grown
    assert retention.parse_size("200M") == 200 * 1024 * 1024
    monkeypatch.setenv("ARA_SPOOL_FULL_POLICY", "drop")
    with pytest.raises(retention.RetentionConfigError):
        writer.append("cap", "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=spool_dir)


def test_group_shared_spool_modes(tmp_path, monkeypatch):
    from ara_spool.spool import quarantine
    from ara_spool.spool.state import RunState, save

    monkeypatch.setenv("ARA_SPOOL_GROUP_SHARED", "true")
    old = os.umask(0o022)
    try:
        d = tmp_path / "shared" / "spool"
        writer.append("g1", "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=d)
        paths = RunPaths.of(d, "g1")
        save(paths, RunState("g1"))
        try_lock(paths).close()
        quarantine.reject(paths, 0, b"bad", "test")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o2770
    for p in (paths.spool, paths.state, paths.lock, paths.rejected):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o660, p
    monkeypatch.delenv("ARA_SPOOL_GROUP_SHARED")
    d2 = tmp_path / "private"
    writer.append("p1", "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=d2)
    assert stat.S_IMODE(os.stat(d2).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d2 / "p1.jsonl").st_mode) == 0o600


def test_daemon_says_what_it_cannot_ship_and_leaves_runs_complete_elsewhere(cli_env, ara, ara_server, tmp_path):
    """The daemon as its own user (nobody here) on a group-shared spool: a user's file spooled
    without ARA_SPOOL_GROUP_SHARED (0600) is an ERROR naming the file and the fix (it was silent);
    a run complete in another Ara is not an ERROR every minute after ARA_API_SERVER changes."""
    import shutil
    import tempfile

    spool = Path(tempfile.mkdtemp(prefix="ara-spool-shared-", dir="/tmp"))
    try:
        os.chown(spool, 0, 65534)
        os.chmod(spool, 0o2770)
        shared = dict(cli_env, ARA_SPOOL_DIR=str(spool), ARA_SPOOL_GROUP_SHARED="true")
        spool_run(spool, "elsewhere-1", hosts=1, tasks=2)  # written by the group-shared writer below
        for p in spool.iterdir():
            os.chmod(p, 0o660)
        r = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "flush", "--quiet"], env=shared,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        private = dict(cli_env, ARA_SPOOL_DIR=str(spool))
        subprocess.run([sys.executable, "-m", "ara_spool.flusher", "emit", "--run", "private-1", "--task", "t",
                        "--host", "h", "--status", "ok"], env=private, check=True, timeout=60)
        path = spool / "private-1.jsonl"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

        log = tmp_path / "nobody.log"

        def daemon(server: str) -> subprocess.Popen:
            env = dict(shared, ARA_API_SERVER=server, ARA_SPOOL_LOG_LEVEL="INFO", JOURNAL_STREAM=journal_stream(log))
            with open(log, "ab") as fh:
                return subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                                         sys.executable, "-m", "ara_spool.flusher", "flush", "--follow", "--poll",
                                         "0.1"], env=env, stdout=fh, stderr=fh)

        d = daemon(f"http://127.0.0.1:{free_port()}/")  # ARA_API_SERVER changed (a typo)
        try:
            wait_until(lambda: "cannot read" in log.read_text(), 20, "the unreadable file's error")
            time.sleep(1.0)  # ten polls
        finally:
            d.send_signal(signal.SIGTERM)
            assert d.wait(20) == 0
        text = log.read_text()
        errors = [ln for ln in text.splitlines() if ln.startswith("<3>")]
        assert len(errors) == 1 and str(path) in errors[0] and "chmod 660" in errors[0], text
        assert "ARA_SPOOL_GROUP_SHARED=true" in errors[0] and "elsewhere-1" not in errors[0], text
        assert "<6>INFO ara_spool.daemon: run elsewhere-1 is complete in " in text, text

        status = subprocess.run([sys.executable, "-m", "ara_spool.flusher", "status", "--run", "private-1",
                                 "--json"], env=shared, capture_output=True, text=True, timeout=60)
        assert "cannot read" in status.stdout and "chmod 600" not in status.stdout, status.stdout

        os.chown(path, 0, 65534)  # the fix it printed
        os.chmod(path, 0o660)
        log.write_text("")
        d = daemon(ara_server.url)
        try:
            wait_until(lambda: ara.playbooks_for("private-1"), 20, "the fixed file shipped")
        finally:
            d.send_signal(signal.SIGTERM)
            assert d.wait(20) == 0
        assert "<3>" not in log.read_text(), log.read_text()
        assert len(ara.playbooks_for("elsewhere-1")) == 1
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def test_status_says_ara_is_unreachable_during_an_outage(cli_env, spool_dir, followers, tmp_path):
    """During an outage STATUS= said "1 shipping", never that Ara was down; and only the first
    retry was a WARNING. Now STATUS= leads with "Ara unreachable since T: <error>" as soon as a
    shipper fails, and the journal has it as a WARNING."""
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    messages: list[str] = []

    def outage() -> bool:
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        return any(m.startswith("STATUS=Ara unreachable since ") for m in messages)

    try:
        dead = f"http://127.0.0.1:{free_port()}"
        env = dict(cli_env, NOTIFY_SOCKET=str(sock_path), JOURNAL_STREAM=journal_stream(tmp_path / "daemon.log"),
                   ARA_API_SERVER=dead)
        emit_events(spool_dir, "outage-1", 3)
        d = followers(env, "--max-backoff", "0.5")
        wait_until(outage, 20, "STATUS= to say Ara is unreachable", every=0.01)
        rc, _ = d.stop()
        assert rc == 0
    finally:
        sock.close()
    [first] = [m for m in messages if m.startswith("STATUS=Ara unreachable since ")][:1]
    assert "cannot connect" in first and "backlog 3 event(s) in 1 run(s)" in first, first
    assert any(ln.startswith("<4>WARNING ara_spool.daemon: Ara unreachable since ") for ln in d.text().splitlines()), \
        d.text()


def test_size_cap_counts_only_what_is_not_in_ara(cli_env, spool_dir):
    """ARA_SPOOL_MAX_BYTES=1M with 0 B pending said "SPOOL OVER CAP" and `refuse` refused `emit`
    although everything was shipped; its message began `ara-spool: : spool`."""
    from ara_spool.spool.state import RunState, save

    emit_events(spool_dir, "cap-shipped", 40)
    size = os.path.getsize(spool_dir / "cap-shipped.jsonl")
    # Its checkpoint at the spool's end, as a flush leaves it: nothing of it is unshipped.
    save(RunPaths.of(spool_dir, "cap-shipped"), RunState("cap-shipped", dest="http://x/api/v1", offset=size,
                                                          ended=True))
    env = dict(cli_env, ARA_SPOOL_MAX_BYTES=str(size // 2), ARA_SPOOL_FULL_POLICY="refuse")
    emit = [sys.executable, "-m", "ara_spool.flusher", "emit", "--run", "cap-new", "--task", "t", "--host", "h",
            "--status", "ok"]
    r = subprocess.run(emit, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert retention.unshipped_bytes(spool_dir) == os.path.getsize(spool_dir / "cap-new.jsonl")
    # Unshipped bytes over the cap: refused, and the message starts as every other one.
    r = subprocess.run(emit, env=dict(env, ARA_SPOOL_MAX_BYTES="100"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("ara-spool: spool ") and "not yet in Ara" in r.stderr, r.stderr
