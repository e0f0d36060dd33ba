"""A run's identity is bound to the Ara it was shipped to (issue 10), against real Ara servers:
a server switch, a wrong URL, a lost or copied checkpoint, a reset database, requeue."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ara_spool.spool import quarantine
from ara_spool.spool.paths import RunPaths
from ara_spool.spool.state import load, save

from tests.ara import AraAPI, AraServer, free_port
from tests.faultproxy import Rule
from tests.runs import emit_events, spool_run


def cli(env: dict[str, str], *args: str, server: str | None = None, timeout: float = 120,
        ) -> subprocess.CompletedProcess:
    if server is not None:
        env = dict(env, ARA_API_SERVER=server)
    return subprocess.run([sys.executable, "-m", "ara_spool.flusher", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def ara_b(tmp_path_factory):
    """A second real Ara: another server, another database."""
    server = AraServer(tmp_path_factory.mktemp("ara-b"), kind="gunicorn", workers=2)
    server.start()
    yield server
    server.cleanup()


def result_count(api: AraAPI, run_id: str) -> int:
    return sum(len(api.results(pb["id"])) for pb in api.playbooks_for(run_id))


def test_server_switch_ships_the_whole_run_as_its_own_playbook_and_never_touches_another_run(
        cli_env, spool_dir, ara_server, ara, ara_b):
    b = AraAPI(ara_b.url)
    # Ara B already holds another run.
    other_dir = spool_dir.parent / "other-spool"
    other_dir.mkdir(mode=0o700)
    emit_events(other_dir, "other-run", 4)
    assert cli(dict(cli_env, ARA_SPOOL_DIR=str(other_dir)), "flush", "-q", server=ara_b.url).returncode == 0
    other_pb = b.playbook_for("other-run")
    other_rows = len(b.results(other_pb["id"]))
    assert other_rows == 4

    emit_events(spool_dir, "sw", 3)
    assert cli(cli_env, "flush", "-q", "--run", "sw", server=ara_server.url).returncode == 0
    emit_events(spool_dir, "sw", 1)
    p = cli(cli_env, "flush", "-q", "--run", "sw", server=ara_b.url)
    assert p.returncode == 0, p.stderr
    # B got the whole run, from its first event, as a playbook of its own; B's other run is untouched.
    assert len(b.results(b.playbook_for("sw")["id"])) == 4
    assert b.playbook_for("sw")["id"] != other_pb["id"]
    assert len(b.results(other_pb["id"])) == other_rows
    assert len(ara.results(ara.playbook_for("sw")["id"])) == 3  # A as it was
    # status links the run to the Ara it went to last, and knows both.
    rows = json.loads(cli(cli_env, "status", "--json", "--run", "sw").stdout)
    assert rows[0]["ara_url"] == f"{ara_b.url}/playbooks/{b.playbook_for('sw')['id']}.html"
    assert sorted(rows[0]["destinations"]) == sorted([ara_server.url, ara_b.url])
    # Back to A: its own checkpoint goes on where it stopped: the one new event, once.
    assert cli(cli_env, "flush", "-q", "--run", "sw", server=ara_server.url).returncode == 0
    assert len(ara.results(ara.playbook_for("sw")["id"])) == 4
    assert len(b.results(b.playbook_for("sw")["id"])) == 4


def test_same_ara_under_another_url_is_reconciled_not_doubled(cli_env, spool_dir, ara_server, ara):
    spool_run(spool_dir, "alias", hosts=2, tasks=3)
    assert cli(cli_env, "flush", "-q", "--run", "alias", server=ara_server.url).returncode == 0
    before = result_count(ara, "alias")
    alias = ara_server.url.replace("127.0.0.1", "localhost")  # same server, another name
    p = cli(cli_env, "-v", "flush", "--run", "alias", server=alias)
    assert p.returncode == 0, p.stderr
    assert "reconciling the whole run" in p.stderr
    assert result_count(ara, "alias") == before == 6 and len(ara.playbooks_for("alias")) == 1


class NotAra:
    """`python3 -m http.server`: any HTTP server that is not Ara (answers 404 to Ara's paths)."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(self.port)],
                                     cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("http.server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def test_wrong_server_keeps_every_event_then_the_right_ara_gets_them_once(cli_env, spool_dir, ara, tmp_path,
                                                                         ara_server):
    spool_run(spool_dir, "wrong", hosts=2, tasks=2)
    web = NotAra(tmp_path)
    try:
        p = cli(cli_env, "flush", "--run", "wrong", server=web.url)
    finally:
        web.stop()
    assert p.returncode == 7, p.stderr
    assert web.url in p.stderr and "not a working Ara" in p.stderr and "Traceback" not in p.stderr
    assert f"--server {ara_server.url}" not in p.stderr and f"--server {web.url}" in p.stderr
    paths = RunPaths.of(spool_dir, "wrong")
    assert quarantine.count(paths) == 0
    row = json.loads(cli(cli_env, "status", "--json", "--run", "wrong").stdout)[0]
    assert row["pending"] > 0 and web.url in row["last_error"]
    p = cli(cli_env, "flush", "-q", "--run", "wrong", server=ara_server.url)
    assert p.returncode == 0, p.stderr
    assert result_count(ara, "wrong") == 4 and len(ara.playbooks_for("wrong")) == 1


def test_lost_state_and_copied_spool_do_not_double_the_run(cli_env, spool_dir, ara, ara_server, tmp_path):
    spool_run(spool_dir, "lost", hosts=3, tasks=4)
    assert cli(cli_env, "flush", "-q", "--run", "lost").returncode == 0
    assert result_count(ara, "lost") == 12
    paths = RunPaths.of(spool_dir, "lost")
    paths.state.unlink()
    assert cli(cli_env, "flush", "-q", "--run", "lost").returncode == 0
    assert result_count(ara, "lost") == 12 and len(ara.playbooks_for("lost")) == 1
    # The spool copied to another spool dir (another controller): no checkpoint there either.
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir(mode=0o700)
    shutil.copy2(paths.spool, copy_dir / paths.spool.name)
    assert cli(dict(cli_env, ARA_SPOOL_DIR=str(copy_dir)), "flush", "-q", "--run", "lost").returncode == 0
    assert result_count(ara, "lost") == 12
    # An unreadable checkpoint is set aside, and the run reconciled the same way.
    paths.state.write_text("{not json")
    emit_events(spool_dir, "lost", 2)
    p = cli(cli_env, "-v", "flush", "--run", "lost")
    assert p.returncode == 0, p.stderr
    assert "corrupt" in p.stderr and list(spool_dir.glob("lost.state.corrupt.*"))
    assert result_count(ara, "lost") == 14 and len(ara.playbooks_for("lost")) == 1


def test_checkpoint_naming_another_runs_playbook_is_dropped(cli_env, spool_dir, ara, ara_server):
    """A reset database reuses ids: the checkpoint's playbook exists but is another run's."""
    emit_events(spool_dir, "victim", 2)
    emit_events(spool_dir, "mine", 2)
    assert cli(cli_env, "flush", "-q", "--run", "victim", "--run", "mine").returncode == 0
    victim = ara.playbook_for("victim")
    victim_rows = len(ara.results(victim["id"]))
    paths = RunPaths.of(spool_dir, "mine")
    st = load(paths)
    st.sink = {"playbook": victim["id"]}  # what a reset database would make of the old id
    save(paths, st)
    emit_events(spool_dir, "mine", 1)
    p = cli(cli_env, "-v", "flush", "--run", "mine")
    assert p.returncode == 0, p.stderr
    assert "does not carry the label 'run_id:mine'" in p.stderr
    assert len(ara.results(victim["id"])) == victim_rows
    assert result_count(ara, "mine") == 3 and len(ara.playbooks_for("mine")) == 1


async def test_requeue_ships_quarantined_events_once(cli_env, spool_dir, ara, proxy, ara_server):
    emit_events(spool_dir, "rq", 4)
    proxy.rules = [Rule("respond", "POST", "/api/v1/results", times=2, status=400,
                        body='{"content": ["refused for the test"]}')]
    loop = asyncio.get_running_loop()
    p = await loop.run_in_executor(None, lambda: cli(cli_env, "flush", "-q", "--run", "rq", server=proxy.url))
    assert p.returncode == 5 and "quarantined" in p.stderr
    paths = RunPaths.of(spool_dir, "rq")
    assert quarantine.count(paths) == 2 and result_count(ara, "rq") == 2
    saved = paths.rejected.read_bytes()
    p = cli(cli_env, "requeue", "--run", "rq")
    assert p.returncode == 0 and "2 line(s) back in line" in p.stderr
    assert not paths.rejected.exists()
    # A requeue killed after its appends, before it rewrote the quarantine: the next one appends nothing.
    paths.rejected.write_bytes(saved)
    size = paths.spool_size()
    assert cli(cli_env, "requeue", "--run", "rq").returncode == 0
    assert paths.spool_size() == size and not paths.rejected.exists()
    assert cli(cli_env, "flush", "-q", "--run", "rq").returncode == 0
    assert result_count(ara, "rq") == 4
    contents = sorted(r["id"] for r in ara.results(ara.playbook_for("rq")["id"]))
    assert len(contents) == 4


def test_unknown_run_is_a_usage_error(cli_env, spool_dir):
    emit_events(spool_dir, "known", 1)
    for args in (("flush", "--run", "nope"), ("status", "--run", "nope"), ("requeue", "--run", "nope")):
        p = cli(cli_env, *args)
        assert p.returncode == 2 and "no run 'nope'" in p.stderr, (args, p.stderr)


class Hanging:
    """A socket that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("where", ["down", "hanging"])
def test_one_shot_stops_within_a_second(cli_env, spool_dir, sig, where):
    import signal as signal_mod

    emit_events(spool_dir, "stop1", 3)
    hang = Hanging() if where == "hanging" else None
    server = hang.url if hang else f"http://127.0.0.1:{free_port()}"
    env = dict(cli_env, ARA_API_SERVER=server, ARA_API_TIMEOUT="30")
    proc = subprocess.Popen([sys.executable, "-m", "ara_spool.flusher", "flush", "--run", "stop1", "--timeout", "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    paths = RunPaths.of(spool_dir, "stop1")
    try:
        # Wait until it is in backoff (down: an error recorded) or in a request that never ends.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            st = load(paths) if paths.state.exists() else None
            if st is not None and (st.last_error if where == "down" else not st.clean):
                break
            time.sleep(0.05)
        time.sleep(1.0)
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(getattr(signal_mod, sig))
        _, err = proc.communicate(timeout=10)
        took = time.monotonic() - t0
    finally:
        if hang:
            hang.close()
        if proc.poll() is None:
            proc.kill()
    assert took < 1.0, f"took {took:.2f}s to stop"
    assert "stopped; checkpoint saved" in err and "Traceback" not in err
    st = load(paths)
    assert st.offset == 0 and st.last_error is None or "127.0.0.1" in (st.last_error or "")


def test_retries_are_quiet_unless_verbose(cli_env, spool_dir):
    emit_events(spool_dir, "quiet1", 1)
    down = f"http://127.0.0.1:{free_port()}"
    p = cli(cli_env, "flush", "--run", "quiet1", "--timeout", "3", server=down)
    assert p.returncode == 3
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2, lines  # what happened, and the command that ships it later
    assert "Ara unreachable" in lines[0] and f"--server {down}" in lines[1]
    p = cli(cli_env, "-v", "flush", "--run", "quiet1", "--timeout", "3", server=down)
    assert p.returncode == 3 and "retry" in p.stderr


@pytest.mark.parametrize("method,path,status,body", [
    ("POST", "/api/v1/results", 302, "<a href='/accounts/login/'>login</a>"),  # a login page in front of Ara
    ("POST", "/api/v1/results", 200, "<html><body>Welcome to nginx</body></html>"),  # not Ara's JSON
    ("PATCH", "/api/v1/plays/", 404, "<h1>Not Found</h1>"),  # a parent the run created is gone
    ("POST", "/api/v1/plays", 405, "<h1>Method Not Allowed</h1>"),
])
async def test_server_errors_stop_the_run_and_quarantine_nothing(cli_env, spool_dir, ara, proxy, ara_server,
                                                                 method, path, status, body):
    run_id = f"srv-{status}"
    spool_run(spool_dir, run_id, hosts=2, tasks=2)
    proxy.rules = [Rule("respond", method, path, times=1, status=status, body=body)]
    loop = asyncio.get_running_loop()
    p = await loop.run_in_executor(None, lambda: cli(cli_env, "flush", "--run", run_id, server=proxy.url))
    assert p.returncode == 7, p.stderr
    assert "not a working Ara" in p.stderr and proxy.url in p.stderr and "Traceback" not in p.stderr
    assert quarantine.count(RunPaths.of(spool_dir, run_id)) == 0
    # Fixed (here: the proxy answers as Ara again): every event arrives, once.
    p = await loop.run_in_executor(None, lambda: cli(cli_env, "flush", "-q", "--run", run_id, server=proxy.url))
    assert p.returncode == 0, p.stderr
    assert result_count(ara, run_id) == 4 and len(ara.playbooks_for(run_id)) == 1
