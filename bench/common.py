"""Shared helpers for the benchmarks in bench/: servers, synthetic spools, stats, tables, results.

Not a test module: every bench script is run by hand (see bench/README.md).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benches reuse the tests' helpers (tests/ara.py); ara_spool is installed
    sys.path.insert(0, str(ROOT))

from ara_spool.spool import writer  # noqa: E402

from tests.ara import AraAPI, AraServer, ara_env, free_port  # noqa: E402,F401

BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"


# -- machine and load ----------------------------------------------------------------------------
def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def load_str() -> str:
    a, b, c = loadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": load_str(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def banner(title: str, info: dict[str, Any]) -> None:
    print(f"== {title} ==")
    print(f"machine: nproc={info['nproc']} python={info['python']} load average (1/5/15 min) at start: "
          f"{info['loadavg_start']}")


# -- stats and output ----------------------------------------------------------------------------
def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join(out)


def save_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{name}-{stamp}.json"
    data.setdefault("loadavg_end", load_str())
    path.write_text(json.dumps(data, indent=2, default=str))
    print(f"results written to {path.relative_to(ROOT)}")
    return path


# -- temp dirs and servers -------------------------------------------------------------------------
@contextmanager
def tempdir(prefix: str):
    d = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextmanager
def ara_server(base: Path, kind: str = "gunicorn", workers: int = 4, env: dict[str, str] | None = None,
               wsgi: str | None = None):
    """A real Ara on 127.0.0.1 (sqlite unless env says otherwise); stopped (process group) at exit.
    `wsgi`: another gunicorn application (module:callable) found in bench/, wrapping Ara's."""
    if wsgi:
        env = dict(env or {}, PYTHONPATH=str(Path(__file__).resolve().parent))
    server = AraServer(base, kind=kind, workers=workers, env=env, wsgi=wsgi)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def server_pids(server_pid: int) -> list[int]:
    """A forking server's master and its children (gunicorn's workers)."""
    return [server_pid, *map(int, Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split())]


def pin_apart(server_pid: int) -> tuple[int, int]:
    """Issue 13's pinned setting: the server (its master, workers and their threads) on the first
    core, this process and all it starts from now on (flushers, ansible-playbook, proxies) on the
    second. Returns (server core, client core)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("pinning needs 2 cores")
    for pid in server_pids(server_pid):
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), {cores[0]})
    os.sched_setaffinity(0, {cores[1]})
    return cores[0], cores[1]


def kill_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)


def api_get(url: str, path: str, **params: Any) -> Any:
    return AraAPI(url).get(path, **params)


def count(url: str, path: str, **params: Any) -> int:
    params["limit"] = 1
    return int(AraAPI(url).get(path, **params)["count"])


# -- environment for the flusher CLI -------------------------------------------------------------------
def flusher_env(server: str, spool_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARA_", "ANSIBLE_"))}
    env.update({"ARA_API_SERVER": server, "ARA_SPOOL_DIR": str(spool_dir),
                "PATH": f"{BIN}:{env.get('PATH', '')}"})
    env.update(extra)
    return env


# -- synthetic spools ----------------------------------------------------------------------------------
def typical_content(host: str, i: int) -> dict[str, Any]:
    """What the callback records for a debug task (after strip_internal_keys)."""
    return {"msg": f"hello {host} step {i}", "changed": False, "_ansible_verbose_always": True}


class SpoolBuilder:
    """Writes a run's spool the way the callback does (same encoder, seq = byte offset), but without
    re-opening the file per event, so that 1M-event spools take seconds, not minutes."""

    def __init__(self, spool_dir: Path, run_id: str) -> None:
        spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = spool_dir / f"{run_id}.jsonl"
        self.run_id = run_id
        self.fh = open(self.path, "ab")  # noqa: SIM115
        os.chmod(self.path, 0o600)
        self.offset = self.fh.tell()
        self.t = datetime(2025, 1, 1, tzinfo=UTC)
        self.events = 0
        self.results = 0

    def ts(self) -> str:
        self.t += timedelta(microseconds=1500)
        return self.t.isoformat(timespec="microseconds")

    def add(self, kind: str, body: dict[str, Any], ts: str | None = None) -> None:
        key = writer.schema.REQUIRED[kind][0]
        ev = {"v": 1, "run": self.run_id, "seq": self.offset, "ts": ts or self.ts(), "kind": kind, key: body}
        line = writer.encode(ev)
        self.fh.write(line)
        self.offset += len(line)
        self.events += 1
        if kind == "result":
            self.results += 1

    def close(self) -> None:
        self.fh.close()


def build_run(spool_dir: Path, run_id: str, hosts: int, tasks: int, *, plays: int = 1,
              max_events: int | None = None) -> SpoolBuilder:
    """A whole run as the callback spools it: run_start, file, per play: play_start, per task:
    task_start, one result per host, task_end; play_end; host_stats, run_end.
    With max_events, tasks continue until the spool holds about that many events."""
    b = SpoolBuilder(spool_dir, run_id)
    path = f"/bench/{run_id}/site.yml"
    b.add("run_start", {"path": path, "name": f"bench {run_id}", "ansible_version": "2.19.0", "labels": ["bench"],
                        "metadata": {}, "controller": "bench", "user": "bench", "python_version": "3.11",
                        "client_version": "ara-spool"})
    b.add("file", {"path": path, "content": "- hosts: all\n  tasks: []\n"})
    host_names = [f"host{h:03d}" for h in range(hosts)]
    task_no = 0
    for p in range(plays):
        play_uuid = f"00000000-0000-4000-8000-{p:012d}"
        b.add("play_start", {"uuid": play_uuid, "name": f"play {p}"})
        n = 0
        while (max_events is None and n < tasks) or (max_events is not None and b.events < max_events - 4):
            task_uuid = f"11111111-{p:04d}-4000-8000-{task_no:012d}"
            name = f"step {task_no}"
            b.add("task_start", {"uuid": task_uuid, "name": name, "action": "ansible.builtin.debug", "path": path,
                                 "lineno": task_no + 3, "handler": False, "tags": [], "play_uuid": play_uuid})
            for h in host_names:
                start = b.ts()
                end = b.ts()
                b.add("result", {"task_uuid": task_uuid, "play_uuid": play_uuid, "host": h, "delegated_to": [],
                                 "status": "ok", "changed": False, "ignore_errors": False, "started": start,
                                 "ended": end, "content": typical_content(h, task_no), "task_name": name,
                                 "action": "ansible.builtin.debug", "path": path, "lineno": task_no + 3}, ts=end)
            b.add("task_end", {"uuid": task_uuid, "status": "completed"})
            task_no += 1
            n += 1
        b.add("play_end", {"uuid": play_uuid, "status": "completed"})
    b.add("host_stats", {h: {"ok": task_no, "changed": 0, "failed": 0, "skipped": 0, "unreachable": 0}
                         for h in host_names})
    b.add("run_end", {"status": "completed"})
    b.close()
    return b


def read_state(spool_dir: Path, run_id: str) -> dict[str, Any]:
    """The run's checkpoint at the destination it was shipped to last (state v2)."""
    data = json.loads((spool_dir / f"{run_id}.state").read_text())
    if data.get("version", 1) == 1:
        return data
    return data["destinations"][data["current"]]


def run_flush(env: dict[str, str], *args: str, timeout: float = 3600) -> tuple[float, subprocess.CompletedProcess]:
    """`ara-spool flush ...` as a subprocess: (wall seconds, completed process)."""
    t0 = time.perf_counter()
    proc = subprocess.run([str(BIN / "ara-spool"), "flush", "--quiet", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    return time.perf_counter() - t0, proc


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
