"""Test helpers: start a real Ara server, and read back what a user of Ara would see."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ara_env(base_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ARA_BASE_DIR": str(base_dir),
        # Django >= 5.1 sqlite option: no "database is locked" on concurrent get-or-create.
        "ARA_DATABASE_OPTIONS": '@json {"transaction_mode": "IMMEDIATE", "timeout": 20}',
        "ARA_ALLOWED_HOSTS": '["127.0.0.1", "localhost"]',
        "ARA_DEBUG": "false",
    })
    env.update(extra)
    return env


class AraServer:
    """A real Ara (ara[server] from PyPI) on 127.0.0.1, with its own ARA_BASE_DIR."""

    def __init__(self, base_dir: Path, *, kind: str = "gunicorn", workers: int = 2, port: int | None = None,
                 env: dict[str, str] | None = None, log_path: Path | None = None, wsgi: str | None = None) -> None:
        self.base_dir = base_dir
        self.kind = kind
        self.workers = workers
        self.port = port or free_port()
        self.env = ara_env(base_dir, **(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_path or base_dir / "server.log"
        self.wsgi = wsgi or "ara.server.wsgi:application"  # gunicorn's application

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def migrate(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(BIN / "ara-manage"), "migrate"], env=self.env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self, timeout: float = 60) -> AraServer:
        if not (self.base_dir / "ansible.sqlite").exists():
            self.migrate()
        if self.kind == "gunicorn":
            cmd = [str(BIN / "gunicorn"), "--workers", str(self.workers), "--bind", f"127.0.0.1:{self.port}",
                   "--graceful-timeout", "2", self.wsgi]
        else:
            cmd = [str(BIN / "ara-manage"), "runserver", "--noreload", f"127.0.0.1:{self.port}"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Ara server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/api/", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"Ara server did not answer in {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


class AraAPI:
    """Reads Ara's REST API as a user would (sync, stdlib only)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def get(self, path: str, **params: Any) -> Any:
        query = "&".join(f"{k}={urllib.request.quote(str(v))}" for k, v in params.items())
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""), timeout=30) as r:
            return json.loads(r.read())

    def all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        params.setdefault("limit", 100000)
        return self.get(path, **params)["results"]

    def playbooks_for(self, run_id: str) -> list[dict[str, Any]]:
        return self.all("playbooks", label=f"run_id:{run_id}")

    def playbook_for(self, run_id: str) -> dict[str, Any]:
        pbs = self.playbooks_for(run_id)
        assert len(pbs) == 1, f"expected one playbook for run {run_id}, found {len(pbs)}"
        return pbs[0]

    def results(self, playbook: int) -> list[dict[str, Any]]:
        return self.all("results", playbook=playbook, order="id")

    def result(self, result_id: int) -> dict[str, Any]:
        return self.get(f"results/{result_id}")
