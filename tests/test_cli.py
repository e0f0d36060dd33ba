"""The command line as a person uses it: a progress bar on a terminal, a readable status table,
one clear line for each mistake."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios

from tests.runs import emit_events


def run(env, *args):
    return subprocess.run([sys.executable, "-m", "ara_spool.flusher", *args], env=env, capture_output=True, text=True)


def test_progress_bar_on_a_terminal_and_quiet_otherwise(cli_env, spool_dir):
    emit_events(spool_dir, "tty-1", 60)
    pid, fd = pty.fork()
    if pid == 0:  # child: stdout/stderr are the terminal, 120 columns wide
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        os.execve(sys.executable, [sys.executable, "-m", "ara_spool.flusher", "flush", "--run", "tty-1"], cli_env)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "shipping to Ara" in text and "ev/s" in text and "60" in text
    # Not a terminal: no bar, one summary line.
    emit_events(spool_dir, "tty-2", 5)
    p = run(cli_env, "flush", "--run", "tty-2")
    assert p.returncode == 0 and "shipping to Ara" not in p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "5 event(s) shipped" in p.stderr


def test_status_table_and_json(cli_env, spool_dir, ara_server):
    emit_events(spool_dir, "st-shipped", 3)
    assert run(cli_env, "flush", "--run", "st-shipped").returncode == 0
    emit_events(spool_dir, "st-pending", 4)
    p = run(cli_env, "status")
    assert p.returncode == 0
    header, *rows = p.stdout.splitlines()
    assert header.split()[:5] == ["RUN", "PENDING", "SHIPPED", "QUARANTINED", "AGE"]
    by_run = {r.split()[0]: r.split() for r in rows}
    assert by_run["st-pending"][1:3] == ["4", "0"] and by_run["st-shipped"][1:3] == ["0", "3"]
    assert f"{ara_server.url}/playbooks/" in by_run["st-shipped"][6]
    data = {r["run"]: r for r in json.loads(run(cli_env, "status", "--json").stdout)}
    assert data["st-pending"]["pending"] == 4 and data["st-pending"]["playbook_id"] is None


def test_mistakes_get_one_clear_line(cli_env):
    cases = [
        (["emit", "--run", "r", "--task", "t", "--host", "h", "--status", "ok", "--details", "{bad"], "not valid JSON"),
        (["emit", "--run", "../etc", "--task", "t", "--host", "h", "--status", "ok"], "unsafe run id"),
        (["emit", "--task", "t", "--host", "h", "--status", "ok"], "needs --run"),
        (["flush", "--run", "a/b"], "unsafe run id"),
    ]
    for args, message in cases:
        p = run(cli_env, *args)
        assert p.returncode == 2, (args, p.stderr)
        assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    p = run(dict(cli_env, ARA_API_TIMEOUT="soon"), "flush")
    assert p.returncode == 2 and "ARA_API_TIMEOUT" in p.stderr
    p = run(dict(cli_env, ARA_API_PASSWORD="x"), "flush")
    assert p.returncode == 2 and "ARA_API_USERNAME" in p.stderr and "x" not in p.stderr.replace("ARA_API_", "")
