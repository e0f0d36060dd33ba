"""Scale-out: Ara on gunicorn (4 sync workers) + PostgreSQL, one run vs many runs shipped at once.

Starts a throw-away PostgreSQL cluster (Debian's postgresql, initdb + pg_ctl as the postgres user,
under a temp dir, listening on 127.0.0.1 only), migrates Ara into it and serves it with gunicorn.
Workloads (each run: H hosts x T tasks, spooled as the callback writes them), alternated by round:
- 1 run, 1 flusher                          (the sequential baseline: one run ships in order)
- 8 runs, 1 flusher process, --concurrency 8
- 8 runs, 4 flusher processes (2 runs each, own spool dirs: as if from 4 controllers)
- 8 runs, 8 flusher processes (one run each)
Aggregate = all results / wall time (first flusher start to last exit); every run is checked
complete in Ara. Target: aggregate >= 2.5x the single run. With --sqlite, the same on sqlite for
contrast (the single-writer database most teams start with).

    python bench/scaleout.py            # full: 10 hosts x 50 tasks per run, 2 rounds, + sqlite contrast
    python bench/scaleout.py --quick    # smoke: 10 hosts x 8 tasks per run, 1 round, PostgreSQL only

Needs: apt-get install -y postgresql ; pip install psycopg2-binary (or 'ara[postgresql]').
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BIN,
    AraAPI,
    AraServer,
    banner,
    build_run,
    flusher_env,
    load_str,
    machine,
    median,
    port,
    read_state,
    save_results,
    table,
    tempdir,
)

PG_PASSWORD = "bench-only-not-a-secret"


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise SystemExit("PostgreSQL not found: apt-get install -y postgresql")
    return Path(found[-1]).parent


def as_postgres(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess:
    pw = pwd.getpwnam("postgres")

    def demote() -> None:
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    return subprocess.run(cmd, preexec_fn=demote if os.geteuid() == 0 else None, check=True,
                          capture_output=True, text=True, cwd="/tmp", **kw)


@contextmanager
def postgres(work: Path):
    """A temporary PostgreSQL cluster on 127.0.0.1:<free port>; yields its port. Stopped and removed at exit."""
    bindir = pg_bin()
    work.mkdir(mode=0o700)
    os.chmod(work.parent, 0o711)  # the postgres user must traverse the (root-owned) temp dir
    data = work / "pgdata"
    sock = work / "pgsock"
    for d in (data, sock):
        d.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(d, "postgres", "postgres")
    if os.geteuid() == 0:
        shutil.chown(work, "postgres", "postgres")
    pwfile = work / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    try:
        as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "scram-sha-256", "-U", "postgres",
                     "--pwfile", str(pwfile), "-E", "UTF8"])
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"initdb failed: {exc.stderr}") from None
    pwfile.unlink()
    p = port()
    as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(work / "pg.log"), "-w", "-t", "60", "start",
                 "-o", f"-p {p} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=200"])
    try:
        env = {**os.environ, "PGPASSWORD": PG_PASSWORD}
        psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(p), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
        subprocess.run([*psql, "-c", f"CREATE ROLE ara LOGIN PASSWORD '{PG_PASSWORD}'"], env=env, check=True,
                       capture_output=True)
        subprocess.run([*psql, "-c", "CREATE DATABASE ara OWNER ara"], env=env, check=True, capture_output=True)
        yield p
    finally:
        try:
            as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        except subprocess.CalledProcessError as exc:
            print(f"pg_ctl stop failed: {exc.stderr}", file=sys.stderr)


def pg_env(p: int) -> dict[str, str]:
    return {
        "ARA_DATABASE_ENGINE": "django.db.backends.postgresql",
        "ARA_DATABASE_NAME": "ara", "ARA_DATABASE_USER": "ara", "ARA_DATABASE_PASSWORD": PG_PASSWORD,
        "ARA_DATABASE_HOST": "127.0.0.1", "ARA_DATABASE_PORT": str(p),
        "ARA_DATABASE_CONN_MAX_AGE": "60",  # keep each worker's DB connection
        "ARA_DATABASE_OPTIONS": "@json {}",  # drop the sqlite-only options tests/ara.py sets
    }


def workload(url: str, work: Path, runs: int, procs: int, hosts: int, tasks: int) -> dict[str, Any]:
    """Ship `runs` fresh runs with `procs` flusher processes (runs split evenly, own spool dirs)."""
    groups: list[list[str]] = [[] for _ in range(procs)]
    dirs = []
    total_results = 0
    tag = uuid.uuid4().hex[:8]
    for g in range(procs):
        dirs.append(work / f"spool-{tag}-{g}")
    all_ids = []
    for i in range(runs):
        run_id = f"scale-{tag}-{i}"
        g = i % procs
        b = build_run(dirs[g], run_id, hosts, tasks)
        groups[g].append(run_id)
        all_ids.append((dirs[g], run_id))
        total_results += b.results
    t0 = time.perf_counter()
    ps = []
    for g in range(procs):
        args = [str(BIN / "ara-spool"), "flush", "--quiet", "--concurrency", str(max(1, len(groups[g])))]
        for r in groups[g]:
            args += ["--run", r]
        ps.append(subprocess.Popen(args, env=flusher_env(url, dirs[g]), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE))
    for p in ps:
        _, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"flusher rc={p.returncode}: {err.decode()[-1500:]}")
    wall = time.perf_counter() - t0
    api = AraAPI(url)
    requests = 0
    for d, run_id in all_ids:
        pb = api.playbook_for(run_id)
        n = api.get("results", playbook=pb["id"], limit=1)["count"]
        if n != hosts * tasks or pb["status"] != "completed":
            raise RuntimeError(f"run {run_id}: {n}/{hosts * tasks} results, status {pb['status']}")
        requests += read_state(d, run_id)["requests"]
    # RunState.requests is only right with one run per flusher process: a process shipping several
    # runs at once counts every run's requests into each run (the client's counter is shared).
    rps = requests / wall if runs == procs else None
    return {"runs": runs, "procs": procs, "wall": wall, "results": total_results,
            "results_per_s": total_results / wall, "requests_per_s": rps, "state_requests": requests,
            "load": load_str()}


WORKLOADS = [("1 run, 1 flusher", 1, 1), ("8 runs, 1 flusher (--concurrency 8)", 8, 1),
             ("8 runs, 4 flusher processes", 8, 4), ("8 runs, 8 flusher processes", 8, 8)]


def bench(label: str, server: AraServer, work: Path, rounds: int, hosts: int, tasks: int) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = {w[0]: [] for w in WORKLOADS}
    for r in range(rounds):
        order = WORKLOADS if r % 2 == 0 else list(reversed(WORKLOADS))
        for name, runs, procs in order:
            res = workload(server.url, work, runs, procs, hosts, tasks)
            out[name].append(res)
            print(f"  [{label}] round {r + 1} {name:38s} {res['results_per_s']:6.1f} results/s "
                  f"({res['results']} results in {res['wall']:.1f}s, load {res['load']})", flush=True)
    return out


def report(label: str, out: dict[str, list[dict[str, Any]]]) -> tuple[list[list[Any]], float]:
    single = median([x["results_per_s"] for x in out[WORKLOADS[0][0]]])
    rows = []
    best = 0.0
    for name, runs in out.items():
        m = median([x["results_per_s"] for x in runs])
        if name != WORKLOADS[0][0]:
            best = max(best, m / single)
        rps = [x["requests_per_s"] for x in runs if x["requests_per_s"] is not None]
        rows.append([label, name, len(runs), m, median(rps) if rps else "n/a (*)", m / single,
                     ", ".join(f"{x['results_per_s']:.0f}" for x in runs)])
    return rows, best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--tasks", type=int)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=None,
                    help="also run on sqlite for contrast (default: on in full mode)")
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 2)
    tasks = args.tasks or (8 if args.quick else 50)
    do_sqlite = args.sqlite if args.sqlite is not None else not args.quick
    info = machine()
    banner("scale-out: Ara on gunicorn + PostgreSQL, many runs at once", info)
    print(f"each run: {args.hosts} hosts x {tasks} tasks = {args.hosts * tasks} results; gunicorn {args.workers} sync "
          f"workers; PostgreSQL {pg_bin().parent.name} on 127.0.0.1 (same machine); {rounds} round(s)")
    data: dict[str, Any] = {"machine": info, "hosts": args.hosts, "tasks": tasks, "rounds": rounds}
    rows: list[list[Any]] = []
    with tempdir("ara-spool-bench-scale-") as work:
        with postgres(work / "pg") as pgport:
            server = AraServer(work / "ara-pg", kind="gunicorn", workers=args.workers, env=pg_env(pgport))
            server.migrate()
            server.start()
            try:
                data["postgresql"] = bench("postgresql", server, work, rounds, args.hosts, tasks)
            finally:
                server.stop()
        if do_sqlite:
            server = AraServer(work / "ara-sqlite", kind="gunicorn", workers=args.workers).start()
            try:
                data["sqlite"] = bench("sqlite", server, work, rounds, args.hosts, tasks)
            finally:
                server.stop()
    print()
    verdict = None
    for label in ("postgresql", "sqlite"):
        if label in data:
            r, best = report(label, data[label])
            rows += r
            data[f"{label}_best_speedup"] = best
            if label == "postgresql":
                verdict = best
    print(table(["database", "workload", "rounds", "results/s (aggregate)", "requests/s", "x single run",
                 "results/s per round"], rows))
    print("(*) not measured: RunState.requests over-counts when one process ships several runs at once "
          "(shipper.py adds the shared client's counter delta to each run)")
    print(f"target aggregate >= 2.5x single run (PostgreSQL): {'MET' if verdict >= 2.5 else 'MISSED'} "
          f"(best {verdict:.2f}x)")
    print(f"load average at end: {load_str()}")
    save_results("scaleout", data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
