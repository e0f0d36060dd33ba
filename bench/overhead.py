"""Recording overhead: wall time of a whole ansible-playbook run, with and without recording.

A playbook of N `debug` tasks on localhost (connection local, gather_facts false). Configurations,
alternated round by round against one real Ara (gunicorn, 4 sync workers, sqlite) on this machine:
- none:        plain ansible-playbook, no recording callback at all.
- ara-spool:   the ara_spool callback on (ARA_SPOOL_ENABLED=true), its background flusher shipping
               while the play runs; the wall time includes the final flush (the callback waits for
               it), so the run is complete in Ara at exit (checked through the API after each run).
- ara_default: Ara's own callback, http client, against the same Ara (also complete at exit).
- capture:     the ara_spool callback with shipping deferred (ARA_SPOOL_FLUSHER=false), then
               `ara-spool flush --run ID` afterwards: capture alone, and capture + ship = the time
               until the run is complete in Ara.
Target: ara-spool <= 1.05x of none.
With --pin (issue 13's setting): Ara's gunicorn (master and workers) on core 0, ansible-playbook and
everything it starts (forks, the flusher) on core 1, so that the server's CPU is not the client's.

    python bench/overhead.py            # full: 300 tasks, 3 rounds
    python bench/overhead.py --quick    # smoke: 50 tasks, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ara_spool.handlers import env_lines  # noqa: E402
from common import (  # noqa: E402
    BIN,
    AraAPI,
    AraServer,
    banner,
    load_str,
    machine,
    median,
    pin_apart,
    read_state,
    save_results,
    server_pids,
    table,
    tempdir,
)


def write_playbook(path: Path, tasks: int) -> None:
    lines = ["- name: overhead benchmark", "  hosts: localhost", "  connection: local", "  gather_facts: false",
             "  tasks:"]
    for i in range(tasks):
        lines += [f"    - name: step {i}", "      ansible.builtin.debug:", f"        msg: \"step {i}\""]
    path.write_text("\n".join(lines) + "\n")


def base_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARA_", "ANSIBLE_"))}
    env.update({
        "PATH": f"{BIN}:{env.get('PATH', '')}",
        "ANSIBLE_HOME": str(work / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
        "ANSIBLE_REMOTE_TMP": str(work / "ansible-remote"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
    })
    return env


def spool_env(work: Path, server: str, spool: Path, run_id: str, flusher: bool) -> dict[str, str]:
    env = base_env(work)
    for line in env_lines():  # what `eval "$(ara-spool env)"` exports
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.split("$")[0].strip("'")
    env.update({"ARA_SPOOL_ENABLED": "true", "ARA_SPOOL_DIR": str(spool), "ARA_API_SERVER": server,
                "ARA_RUN_ID": run_id, "ARA_SPOOL_FLUSH_TIMEOUT": "600",
                "ARA_SPOOL_FLUSHER": "true" if flusher else "false"})
    return env


def ara_default_env(work: Path, server: str) -> dict[str, str]:
    env = base_env(work)
    cb = subprocess.run([sys.executable, "-m", "ara.setup.callback_plugins"], capture_output=True, text=True,
                        check=True).stdout.strip()
    env.update({"ANSIBLE_CALLBACK_PLUGINS": cb, "ARA_API_CLIENT": "http", "ARA_API_SERVER": server})
    return env


SERVER_PIDS: list[int] = []  # gunicorn master + workers: their CPU time is the server's cost
CPU: dict[str, float] = {}  # CPU seconds of the last play(): client tree and server


def _server_cpu() -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in SERVER_PIDS:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def play(env: dict[str, str], playbook: Path, name: str) -> tuple[float, float]:
    """Run ansible-playbook; (wall seconds, start time.time()). CPU gets the client tree's CPU seconds
    (ansible-playbook, its forks and its flusher, all reaped by it) and the server's."""
    cmd = [str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), "-e", f"ara_playbook_name={name}"]
    srv0 = _server_cpu()
    start = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=1800)
    dt = time.perf_counter() - t0
    ru = os.wait4(proc.pid, 0)[2] if proc.returncode is None else None
    import resource

    if ru is None:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        CPU["client"] = ru.ru_utime + ru.ru_stime - CPU.get("_children_total", 0.0)
        CPU["_children_total"] = ru.ru_utime + ru.ru_stime
    else:
        CPU["client"] = ru.ru_utime + ru.ru_stime
    CPU["server"] = _server_cpu() - srv0
    if proc.returncode != 0:
        raise RuntimeError(f"ansible-playbook rc={proc.returncode}: {out[-1500:]} {err[-1500:]}")
    if "WARNING" in err and "ara-spool" in err:
        print(f"    ara-spool warning: {err.strip()[-400:]}")
    return dt, start


def check_complete(api: AraAPI, playbook: dict[str, Any], tasks: int) -> dict[str, Any]:
    n = api.get("results", playbook=playbook["id"], limit=1)["count"]
    ok = n == tasks and playbook["status"] == "completed" and playbook.get("ended") is not None
    if not ok:
        raise RuntimeError(f"playbook {playbook['id']} incomplete in Ara: {n}/{tasks} results, "
                           f"status {playbook['status']}, ended {playbook.get('ended')}")
    return {"results_in_ara": n, "status": playbook["status"]}


def run_end_time(spool: Path, run_id: str) -> float:
    """When the callback appended run_end (the play itself was over)."""
    last = (spool / f"{run_id}.jsonl").read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    ev = json.loads(last)
    assert ev["kind"] == "run_end", ev["kind"]
    return datetime.fromisoformat(ev["ts"]).timestamp()


def cpu() -> dict[str, float]:
    return {"cpu_client": CPU["client"], "cpu_server": CPU["server"]}


def one(config: str, work: Path, playbook: Path, server: str, tasks: int) -> dict[str, Any]:
    api = AraAPI(server)
    run_id = f"bench-{uuid.uuid4().hex[:12]}"
    load = load_str()
    if config == "none":
        wall, _ = play(base_env(work), playbook, run_id)
        return {"wall": wall, "complete_in_ara": None, "load": load, **cpu()}
    if config == "ara_default":
        wall, _ = play(ara_default_env(work, server), playbook, run_id)
        pbs = api.get("playbooks", name=run_id)["results"]
        pbs = [p for p in pbs if p.get("name") == run_id]
        assert len(pbs) == 1, f"ara_default: {len(pbs)} playbooks named {run_id}"
        detail = api.get(f"playbooks/{pbs[0]['id']}")
        return {"wall": wall, "complete_in_ara": wall, "load": load, **cpu(), **check_complete(api, detail, tasks)}
    spool = work / f"spool-{run_id}"
    if config == "ara-spool->fake":
        # Diagnostic: the same, shipping to bench/fake_ara.py (no server CPU, nothing stored).
        wall, start = play(spool_env(work, server, spool, run_id, flusher=True), playbook, run_id)
        st = read_state(spool, run_id)
        if not st["ended"]:
            raise RuntimeError(f"fake: run {run_id} not all shipped")
        end = run_end_time(spool, run_id)
        return {"wall": wall, "complete_in_ara": None, "play_part": end - start,
                "final_flush_wait": start + wall - end, "requests": st["requests"], "load": load, **cpu()}
    if config == "ara-spool":
        env = spool_env(work, server, spool, run_id, flusher=True)
        wall, start = play(env, playbook, run_id)
        pb = api.playbook_for(run_id)
        st = read_state(spool, run_id)
        end = run_end_time(spool, run_id)
        return {"wall": wall, "complete_in_ara": wall, "play_part": end - start,
                "final_flush_wait": start + wall - end, "requests": st["requests"], "load": load, **cpu(),
                **check_complete(api, pb, tasks)}
    if config == "capture":
        env = spool_env(work, server, spool, run_id, flusher=False)
        wall, _ = play(env, playbook, run_id)
        c = cpu()
        t0 = time.perf_counter()
        proc = subprocess.run([str(BIN / "ara-spool"), "flush", "--quiet", "--run", run_id], env=env,
                              capture_output=True, text=True, timeout=1800)
        ship = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"flush rc={proc.returncode}: {proc.stderr[-1500:]}")
        pb = api.playbook_for(run_id)
        return {"wall": wall, "ship": ship, "complete_in_ara": wall + ship, "load": load, **c,
                **check_complete(api, pb, tasks)}
    raise ValueError(config)


class FakeServer:
    """bench/fake_ara.py in its own process group (diagnostic only)."""

    def __init__(self) -> None:
        from common import port

        self.port = port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> FakeServer:
        from common import wait_http

        self.proc = subprocess.Popen([str(BIN / "python"), str(Path(__file__).resolve().parent / "fake_ara.py"),
                                      "--port", str(self.port)], start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.url + "/api/")
        return self

    def stop(self) -> None:
        from common import kill_group

        if self.proc:
            kill_group(self.proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tasks", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--fake", action="store_true",
                    help="diagnostic: none vs ara-spool shipping to bench/fake_ara.py (no Ara server CPU)")
    ap.add_argument("--pin", action="store_true",
                    help="Ara on core 0, ansible-playbook and all it starts on core 1 (needs 2 cores)")
    args = ap.parse_args()
    tasks = args.tasks or (50 if args.quick else 300)
    rounds = args.rounds or (1 if args.quick else 3)
    info = machine()
    banner("recording overhead: whole ansible-playbook run", info)
    configs = ["none", "ara-spool", "ara_default", "capture"]
    if args.fake:
        configs = ["none", "ara-spool->fake"]
    print(f"{tasks} debug tasks on localhost (connection local, gather_facts false); {rounds} round(s), "
          f"order rotated each round; Ara 1.8.0 on gunicorn ({args.workers} sync workers, sqlite), same machine")
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    with tempdir("ara-spool-bench-overhead-") as work:
        playbook = work / "pb.yml"
        write_playbook(playbook, tasks)
        if args.fake:
            server = FakeServer().start()
        else:
            server = AraServer(work / "ara", kind="gunicorn", workers=args.workers).start()
        SERVER_PIDS.extend(server_pids(server.proc.pid))
        if args.pin:
            server_core, client_core = pin_apart(server.proc.pid)
            print(f"pinned: Ara (gunicorn, pids {SERVER_PIDS}) on core {server_core}, this bench and "
                  f"ansible-playbook with all it starts on core {client_core}")
        try:
            play(base_env(work), playbook, "warmup")  # page cache, bytecode
            for r in range(rounds):
                order = configs[r % len(configs):] + configs[:r % len(configs)]
                for c in order:
                    res = one(c, work, playbook, server.url, tasks)
                    runs[c].append(res)
                    print(f"  round {r + 1} {c:12s} wall {res['wall']:6.2f}s"
                          + (f"  complete in Ara {res['complete_in_ara']:6.2f}s" if res["complete_in_ara"] else "")
                          + f"  (load {res['load']})", flush=True)
        finally:
            server.stop()
    base = median([x["wall"] for x in runs["none"]])
    rows = []
    cpu_rows = []
    labels = {"none": "no recording", "ara-spool": "ara-spool (callback + background flusher)",
              "ara_default": "ara_default (Ara's callback, http)",
              "capture": "ara-spool capture only (ARA_SPOOL_FLUSHER=false)",
              "ara-spool->fake": "DIAGNOSTIC ara-spool shipping to a fake Ara (no server CPU)"}
    for c in configs:
        w = [x["wall"] for x in runs[c]]
        comp = [x["complete_in_ara"] for x in runs[c] if x["complete_in_ara"] is not None]
        rows.append([labels[c], ", ".join(f"{x:.2f}" for x in w), median(w), median(w) / base,
                     median(comp) if comp else "-", (median(comp) / base) if comp else "-"])
        cpu_rows.append([labels[c], median([x["cpu_client"] for x in runs[c]]),
                         median([x["cpu_server"] for x in runs[c]]),
                         median([x["cpu_client"] + x["cpu_server"] for x in runs[c]]),
                         median([(x["cpu_client"] + x["cpu_server"]) / x["wall"] for x in runs[c]])])
    print()
    print(table(["configuration", "wall per run (s)", "median wall (s)", "x none", "complete in Ara (s)",
                 "complete x none"], rows))
    print("CPU seconds during the ansible-playbook run (client: ansible-playbook + forks + its flusher; "
          "server: gunicorn master + workers):")
    print(table(["configuration", "client CPU s", "Ara server CPU s", "total CPU s", "cores busy (CPU/wall)"],
                cpu_rows))
    for key in [k for k in ("ara-spool", "ara-spool->fake") if runs.get(k)]:
        sp = runs[key]
        print(f"{key}: play part (start -> run_end appended) median {median([x['play_part'] for x in sp]):.2f}s, "
              f"final flush wait median {median([x['final_flush_wait'] for x in sp]):.2f}s, HTTP requests "
              f"{median([x['requests'] for x in sp]):.0f} for {tasks} results")
    if runs.get("capture"):
        print(f"capture only then `ara-spool flush`: ship median {median([x['ship'] for x in runs['capture']]):.2f}s")
    if args.fake:
        r = median([x["wall"] for x in runs["ara-spool->fake"]]) / base
        print(f"DIAGNOSTIC (fake Ara, not a result against Ara): ara-spool {r:.3f}x none")
        save_results("overhead-fake", {"machine": info, "tasks": tasks, "rounds": rounds, "runs": runs, "ratio": r})
        return 0
    ratio = median([x["wall"] for x in runs["ara-spool"]]) / base
    print(f"target ara-spool <= 1.05x none: {'MET' if ratio <= 1.05 else 'MISSED'} ({ratio:.3f}x); "
          f"every recorded run verified complete in Ara through the API")
    print(f"load average at end: {load_str()}")
    save_results("overhead", {"machine": info, "tasks": tasks, "rounds": rounds, "runs": runs,
                              "ratio_ara_spool": ratio,
                              "ratio_ara_default": median([x["wall"] for x in runs["ara_default"]]) / base,
                              "ratio_capture": median([x["wall"] for x in runs["capture"]]) / base})
    return 0


if __name__ == "__main__":
    sys.exit(main())
