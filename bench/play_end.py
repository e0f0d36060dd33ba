"""How long a play takes with ara-spool recording, by the state of its Ara (issue 10).

tests/playbooks/three_plays.yml (3 plays x 5 debug tasks, localhost) run by a real ansible-playbook,
alternated round by round: recording off; Ara up (gunicorn); Ara down (connection refused); an Ara
that accepts connections and never answers; a login-protected Ara (writes need a login; the flusher sends Basic
auth, Django's PBKDF2, on every request). Reports each wall time's median and its ratio to "off".

    .venv/bin/python bench/play_end.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, ara_server, banner, machine, median, port, save_results, table, tempdir  # noqa: E402

from tests.ansible_run import ansible_env, playbook_cmd  # noqa: E402


class Hanging:
    """Accepts connections, never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"


def run_once(tmp: Path, server: str, enabled: bool, **extra: str) -> float:
    spool = tmp / f"spool-{uuid.uuid4().hex[:8]}"
    spool.mkdir(mode=0o700)
    env = ansible_env(tmp, spool, server, **extra)
    args = ["-e", f"ara_enabled={'true' if enabled else 'false'}"]
    t0 = time.monotonic()
    proc = subprocess.run(playbook_cmd("three_plays.yml", *args), env=env, capture_output=True, text=True,
                          timeout=600)
    took = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"ansible-playbook failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one round")
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    banner("play end by Ara state", machine())
    with tempdir("ara-spool-play-end-") as tmp, ara_server(tmp / "ara", workers=2) as up, \
            ara_server(tmp / "ara-login", workers=2, env={"ARA_WRITE_LOGIN_REQUIRED": "true"}) as login:
        subprocess.run([str(Path(sys.executable).parent / "ara-manage"), "createsuperuser", "--noinput",
                        "--username", "bench", "--email", "bench@example.com"],
                       env=dict(login.env, DJANGO_SUPERUSER_PASSWORD="bench-password"), check=True,
                       capture_output=True)
        hang = Hanging()
        configs = {
            "off": (up.url, False, {}),
            "Ara up": (up.url, True, {}),
            "Ara down": (f"http://127.0.0.1:{port()}", True, {}),
            "Ara hanging": (hang.url, True, {"ARA_API_TIMEOUT": "30"}),
            "Ara with login": (login.url, True, {"ARA_API_USERNAME": "bench", "ARA_API_PASSWORD": "bench-password"}),
        }
        times: dict[str, list[float]] = {name: [] for name in configs}
        for r in range(rounds):
            for name, (server, enabled, extra) in configs.items():
                times[name].append(run_once(tmp, server, enabled, **extra))
            print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.1f}s" for n, v in times.items()), flush=True)
    off = median(times["off"])
    rows = [[name, f"{median(v):.2f}", f"{median(v) / off:.2f}x", " ".join(f"{x:.1f}" for x in v)]
            for name, v in times.items()]
    print(table(["configuration", "median s", "vs off", "runs"], rows))
    save_results("play_end", {"times": times, "root": str(ROOT), "pid": os.getpid()})


if __name__ == "__main__":
    main()
