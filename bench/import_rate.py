"""Import rate of an ansible-runner run vs shipping the same run from ara-spool's own spool.

One real run through ansible-runner (10 local hosts x one `debug` task), enlarged to N results
from its own events (tests/runner_artifacts.py: the task block repeated, counters and uuids
renewed; 10 hosts x N/10 tasks). Then, against one real Ara (gunicorn, 4 sync workers, sqlite),
alternating round by round, each round on a fresh run id:

- import: `ara-spool import runner ARTIFACT` (translate, spool, ship), wall time of the command;
- spool only: `ara-spool import runner --no-ship ARTIFACT`, wall time (translate + spool);
- own spool: `ara-spool flush --run ID` of the spool the step before wrote (the events the callback
  would have spooled for the same run), wall time: ara-spool's own shipping rate.

Rates are results/s of wall time. Each run is checked complete through Ara's API.

    python bench/import_rate.py            # full: 10,000 results, 1 round (--rounds 2: each goes first once)
    python bench/import_rate.py --quick    # smoke: 1,000 results, 1 round
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BIN,
    ara_server,
    banner,
    count,
    flusher_env,
    load_str,
    machine,
    median,
    run_flush,
    save_results,
    table,
    tempdir,
)

from tests.runner_artifacts import enlarge, run_runner  # noqa: E402

HOSTS = 10
PLAYBOOK = """- name: bench
  hosts: all
  gather_facts: false
  tasks:
    - name: hello
      ansible.builtin.debug:
        msg: "hello {{ inventory_hostname }}"
"""


def base_run(tmp: Path, env: dict[str, str]) -> Path:
    pdd = tmp / "pdd"
    (pdd / "project").mkdir(parents=True)
    (pdd / "inventory").mkdir()
    (pdd / "project" / "bench.yml").write_text(PLAYBOOK)
    (pdd / "inventory" / "hosts").write_text(
        "".join(f"h{i:02d} ansible_connection=local\n" for i in range(HOSTS)))
    renv = dict(env, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_FORKS="10")
    return run_runner(pdd, "bench.yml", "bench-base", renv)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1,000 results")
    ap.add_argument("--results", type=int, help="results per run (default 10,000; --quick 1,000)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    results = args.results or (1000 if args.quick else 10000)
    info = machine()
    banner(f"import rate: {results} results ({HOSTS} hosts x {results // HOSTS} tasks), {args.rounds} round(s)", info)
    rows: dict[str, list[float]] = {"import": [], "spool only": [], "own spool": []}
    with tempdir("ara-spool-import-") as tmp, ara_server(tmp / "ara", workers=4) as server:
        spool_dir = tmp / "spool"
        spool_dir.mkdir(mode=0o700)
        env = flusher_env(server.url, spool_dir)
        base = base_run(tmp, env)
        runs = tmp / "runs" / "artifacts"
        runs.mkdir(parents=True)
        for r in range(args.rounds):
            print(f"round {r + 1}: load {load_str()}")
            order = ("import", "own spool") if r % 2 == 0 else ("own spool", "import")  # alternate who goes first
            for name in order:
                ident = f"bench-{name.replace(' ', '-')}-{r}"
                artifact = runs / ident
                n = enlarge(base, artifact, blocks=results // HOSTS)
                if name == "import":
                    wall = timed([str(BIN / "ara-spool"), "import", "runner", "-q", str(artifact)], env)
                else:
                    rows["spool only"].append(n / timed(
                        [str(BIN / "ara-spool"), "import", "runner", "-q", "--no-ship", str(artifact)], env))
                    wall, proc = run_flush(env, "--run", ident)
                    if proc.returncode != 0:
                        raise SystemExit(f"flush failed: {proc.stderr[-2000:]}")
                pb = next(iter(_playbooks(server.url, ident)))
                shipped = count(server.url, "results", playbook=pb)
                if shipped != n:
                    raise SystemExit(f"{ident}: {shipped} results in Ara, expected {n}")
                rows[name].append(n / wall)
                print(f"  {name}: {n} results in {wall:.1f}s = {n / wall:.1f} results/s")
                shutil.rmtree(artifact)
    out = [[name, median(v), " ".join(f"{x:.1f}" for x in v)] for name, v in rows.items()]
    ratio = median(rows["import"]) / median(rows["own spool"])
    print(table(["configuration", "results/s (median)", "rounds"], out))
    print(f"import / own spool: {ratio:.2f}")
    save_results("import_rate", {**info, "results": results, "hosts": HOSTS, "rates": rows, "ratio": ratio})


def _playbooks(url: str, ident: str) -> list[int]:
    from common import AraAPI

    return [p["id"] for p in AraAPI(url).playbooks_for(ident)]


if __name__ == "__main__":
    main()
