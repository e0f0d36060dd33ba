"""`ara-spool prune` (retention without the daemon) and a one-shot flush stopped by SIGTERM, as
subprocesses against the session's real Ara. The same, under a real systemd: test_systemd_real.py."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ara_spool.spool.paths import RunPaths
from ara_spool.spool.state import load

from tests.ara import AraServer, free_port
from tests.authgate import AuthGate
from tests.runs import spool_run


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ara_spool.flusher", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def age(spool_dir: Path, run_id: str, days: float) -> None:
    old = time.time() - days * 86400
    for p in spool_dir.glob(f"{run_id}.*"):
        os.utime(p, (old, old))


def test_prune_retires_shipped_idle_runs_only(cli_env, ara, spool_dir):
    r = cli(cli_env, "prune")
    assert r.returncode == 2 and "--days" in r.stderr, r.stderr
    spool_run(spool_dir, "pr-done", hosts=1, tasks=2)
    spool_run(spool_dir, "pr-open", hosts=1, tasks=2, end=None)  # no run_end: never retired
    spool_run(spool_dir, "pr-young", hosts=1, tasks=1)
    assert cli(cli_env, "flush", "--quiet").returncode == 0
    (spool_dir / "pr-done.flusher.log").write_text("the in-play flusher's log\n")
    for run_id in ("pr-done", "pr-open"):
        age(spool_dir, run_id, 10)

    r = cli(cli_env, "-v", "prune", "--days", "7")
    assert r.returncode == 0, r.stderr
    assert "1 run(s) shipped and idle for 7 day(s) removed; 2 kept" in r.stderr
    # Its real age, not the threshold (it said "idle for 7.0 day(s)" of a 10-day-old run).
    assert "run pr-done: in Ara and idle for 10.0 day(s) (over 7): removed" in r.stderr, r.stderr
    assert not list(spool_dir.glob("pr-done*")), list(spool_dir.iterdir())
    assert (spool_dir / "pr-open.jsonl").exists() and (spool_dir / "pr-young.jsonl").exists()

    # From the environment, as the timer's one-shot runs it; archive into a group-shared spool.
    env = dict(cli_env, ARA_SPOOL_RETENTION_DAYS="0", ARA_SPOOL_RETENTION_ACTION="archive",
               ARA_SPOOL_GROUP_SHARED="true")
    (spool_dir / "pr-young.flusher.log").write_text("log\n")
    want = (spool_dir / "pr-young.jsonl").read_bytes()
    young_mode = (spool_dir / "pr-young.jsonl").stat().st_mode & 0o777
    r = cli(env, "prune", "--quiet")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    arch = spool_dir / "archive"
    assert gzip.decompress((arch / "pr-young.jsonl.gz").read_bytes()) == want
    assert gzip.decompress((arch / "pr-young.flusher.log.gz").read_bytes()) == b"log\n"
    # As private as the spool it keeps (it was 0644 whatever the spool's mode).
    assert oct((arch / "pr-young.jsonl.gz").stat().st_mode & 0o777) == oct(young_mode) == oct(0o600)
    assert oct(arch.stat().st_mode & 0o7777) == oct(0o2770)
    assert (spool_dir / "pr-open.jsonl").exists()
    assert len(ara.results(ara.playbook_for("pr-done")["id"])) == 2  # Ara keeps what was shipped

    r = cli(dict(cli_env, ARA_SPOOL_RETENTION_ACTION="shred"), "prune", "--days", "1")
    assert r.returncode == 2 and "shred" in r.stderr


def test_oneshot_sigterm_with_clean_checkpoint_exits_0(cli_env, ara, ara_server: AraServer, spool_dir):
    """`systemctl stop` of ara-spool-flush.service mid-backlog: exit 0 (was 3, "Ara unreachable"),
    checkpoint clean; the next flush ships the rest exactly once."""
    gate = AuthGate(ara_server.url, free_port()).start()
    gate.accept = {""}  # an open Ara, slowed down so that the flush is still running at SIGTERM
    gate.delay = 0.02
    try:
        env = dict(cli_env, ARA_API_SERVER=gate.url)
        spool_run(spool_dir, "sig-1", hosts=2, tasks=60)
        paths = RunPaths.of(spool_dir, "sig-1")
        proc = subprocess.Popen([sys.executable, "-m", "ara_spool.flusher", "flush", "--quiet"], env=env,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while (not paths.state.exists() or load(paths).shipped < 10) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        st = load(paths)
        assert st.clean and 0 < st.offset < paths.spool_size(), st
        assert "stopped; checkpoint saved" in err
        gate.delay = 0.0
        r = cli(env, "flush", "--quiet")
        assert r.returncode == 0, r.stderr
        results = ara.results(ara.playbook_for("sig-1")["id"])
        assert len(results) == 120 and len({(x["task"], x["host"]) for x in results}) == 120
    finally:
        gate.close()


def test_status_and_prune_after_a_flush_to_a_wrong_server(cli_env, ara, ara_server: AraServer, spool_dir):
    """A run complete in its Ara, then flushed to a wrong --server: status still names the Ara it is
    complete in (it showed PENDING 61, SHIPPED 0, ARA -), a later flush to the right one says there
    is nothing to ship, and prune retires it (it kept it forever)."""
    import json

    spool_run(spool_dir, "wrong-1", hosts=2, tasks=3)
    assert cli(cli_env, "flush", "--quiet").returncode == 0
    lines = (spool_dir / "wrong-1.jsonl").read_bytes().count(b"\n")
    wrong = f"http://127.0.0.1:{free_port()}"
    r = cli(cli_env, "flush", "--run", "wrong-1", "--server", wrong, "--timeout", "1")
    assert r.returncode == 3, r.stderr
    assert load(RunPaths.of(spool_dir, "wrong-1")).dest.startswith(wrong)  # the last one it went to

    r = cli(cli_env, "flush")  # the right one: nothing to do, and it says so
    assert r.returncode == 0 and "nothing to ship" in r.stderr, r.stderr
    for _ in range(2):
        [row] = json.loads(cli(cli_env, "status", "--json").stdout)
        assert (row["complete_in"], row["pending"], row["shipped"]) == (ara_server.url, 0, lines), row
        table = cli(cli_env, "status").stdout
        assert f"{ara_server.url}/playbooks/{row['playbook_id']}.html" in table and "completed" in table, table
        r = cli(cli_env, "flush", "--run", "wrong-1")  # named: the right Ara is the last one again
        assert r.returncode == 0, r.stderr
    assert len(ara.results(ara.playbook_for("wrong-1")["id"])) == 6

    r = cli(cli_env, "status", "--server", wrong)  # status reads the spool only: no API options
    assert r.returncode == 2 and "--server" in r.stderr, r.stderr
    r = cli(cli_env, "flush", "--run", "wrong-1", "--server", wrong, "--timeout", "1")
    assert r.returncode == 3
    r = cli(cli_env, "prune", "--days", "0")
    assert r.returncode == 0 and "1 run(s)" in r.stderr, r.stderr
    assert not list(spool_dir.glob("wrong-1*")), list(spool_dir.iterdir())


def test_oneshot_says_what_it_does_on_a_terminal_and_in_the_journal(cli_env, ara, spool_dir):
    """A one-shot to a dead port on a terminal said nothing for --timeout (60 s); the timer's
    `flush --quiet` logged nothing on success; `requeue` with nothing to do printed nothing."""
    import pty
    import select

    spool_run(spool_dir, "say-1", hosts=1, tasks=1)
    master, slave = pty.openpty()
    env = dict(cli_env, ARA_API_SERVER=f"http://127.0.0.1:{free_port()}")
    proc = subprocess.Popen([sys.executable, "-m", "ara_spool.flusher", "flush", "--timeout", "20"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen, deadline = b"", time.monotonic() + 10
    try:
        while b"cannot connect" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        assert b"cannot connect" in seen and proc.poll() is None, seen  # said at once, still retrying
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        os.close(master)

    def in_journal(*args: str) -> tuple[int, str]:
        """As the timer's unit runs it: stderr is the stream JOURNAL_STREAM names."""
        out = spool_dir.parent / "journal.txt"
        out.write_text("")
        st = out.stat()
        with open(out, "ab") as fh:
            rc = subprocess.run([sys.executable, "-m", "ara_spool.flusher", *args], stderr=fh, timeout=120,
                                env=dict(cli_env, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")).returncode
        return rc, out.read_text()

    rc, text = in_journal("flush", "--quiet")  # the timer's one-shot
    assert rc == 0 and text.startswith("<6>ara-spool: ") and "event(s) shipped" in text, text
    rc, text = in_journal("flush", "--quiet")
    assert rc == 0 and text.startswith("<6>ara-spool: nothing to ship"), text
    # JOURNAL_STREAM inherited, stderr elsewhere (a pipe here): plain and --quiet.
    assert cli(dict(cli_env, JOURNAL_STREAM="8:1"), "flush", "--quiet").stderr == ""
    r = cli(cli_env, "requeue")
    assert r.returncode == 0 and "nothing to requeue" in r.stderr, r.stderr
