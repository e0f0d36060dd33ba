"""Secrets on the flusher side: a token or password given to the flusher is sent to Ara (in the
Authorization header) and nowhere else: not in the spool, state or quarantine files, not in the
argv of the processes we start, not in the flusher's output at -vv, not in an auth error. Spool
files are private (dir 0700, files 0600) even under umask 0."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import sys
from pathlib import Path

import pytest
from aiohttp import web
from ara_spool.spool.paths import group_shared

from tests.faultproxy import FaultProxy, Rule
from tests.runs import emit_events

TOKEN = "tok-S3cr3t-7f1c2a9e-do-not-leak"
PASSWORD = "pw-S3cr3t-b4d5e6-do-not-leak"


class AuthCapturingProxy(FaultProxy):
    """Records the Authorization headers it receives and strips them before Ara (which only knows
    Basic auth against its own users, and needs none here)."""

    seen_auth: list[str]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen_auth.append(request.headers.get("Authorization", ""))
        return await super().handle(request)

    async def _forward(self, request: web.Request):
        request = request.clone(headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"})
        return await super()._forward(request)


@pytest.fixture
async def proxy(aiohttp_server, ara_server):
    fp = AuthCapturingProxy(ara_server.url)
    fp.seen_auth = []
    server = await aiohttp_server(fp.app(), host="127.0.0.1")
    fp.url = str(server.make_url("")).rstrip("/")
    return fp


def _forms(secret: str) -> list[bytes]:
    """The secret as it could leak: plain, and inside a Basic header's base64."""
    forms = [secret.encode()]
    for user in ("ara-user",):
        forms.append(base64.b64encode(f"{user}:{secret}".encode()))
    return forms


def _files_under(d: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in d.rglob("*") if p.is_file() and not p.is_symlink()}


def _cmdlines(pid: int) -> list[bytes]:
    """argv of pid and its descendants (read while they run)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            out.append(Path(f"/proc/{p}/cmdline").read_bytes())
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


@pytest.mark.parametrize("mode", ["bearer-env", "basic-file", "basic-401"])
async def test_secrets_never_leak(proxy, cli_env, spool_dir, tmp_path, mode):
    run_id = f"secret-{mode}"
    emit_events(spool_dir, run_id, 12, hosts=2)
    env = dict(cli_env, ARA_API_SERVER=proxy.url, ARA_API_TIMEOUT="5")
    if mode == "bearer-env":
        env["ARA_API_TOKEN"] = TOKEN
        secret, want_header = TOKEN, f"Bearer {TOKEN}"
    else:
        pw_file = tmp_path / "secrets" / "ara-password"
        pw_file.parent.mkdir(mode=0o700)
        pw_file.write_text(PASSWORD + "\n")
        env.update(ARA_API_USERNAME="ara-user", ARA_API_PASSWORD_FILE=str(pw_file))
        secret = PASSWORD
        want_header = "Basic " + base64.b64encode(f"ara-user:{PASSWORD}".encode()).decode()
    if mode == "basic-401":
        proxy.rules = [Rule("respond", None, "/api/v1/", status=401,
                            body='{"detail":"Invalid username/password."}')]
    else:
        # Slow a few requests (the process lives long enough to read its argv) and refuse one
        # result (so that a quarantine record is written).
        proxy.rules = [Rule("respond", "POST", "/api/v1/results", times=1, status=400, body='{"content":["bad"]}'),
                       Rule("delay", "POST", "/api/v1/results", every=3, times=3, seconds=0.3)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ara_spool.flusher", "-vv", "flush", "--timeout", "60", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=lambda: os.umask(0))
    argvs = []
    while proc.returncode is None:
        argvs += _cmdlines(proc.pid)
        try:
            await asyncio.wait_for(proc.wait(), 0.05)
        except TimeoutError:
            pass
    out, err = await proc.communicate()
    assert argvs, "never saw the flusher's argv"
    if mode == "basic-401":
        assert proc.returncode == 4 and b"auth refused" in err
    else:
        assert proc.returncode == 5, err.decode()[-2000:]  # done, with one line quarantined
        assert (spool_dir / f"{run_id}.rejected.jsonl").exists()
    assert b"DEBUG" in err  # -vv really is verbose
    assert want_header in proxy.seen_auth  # the secret was used...
    files = _files_under(spool_dir)
    for form in _forms(secret):  # ...and is nowhere else
        assert form not in out and form not in err, "secret in the flusher's output"
        assert not any(form in a for a in argvs), "secret in argv"
        leaked = [p for p, data in files.items() if form in data]
        assert not leaked, f"secret in {leaked}"
    # Private files, even under umask 0.
    if not group_shared():
        assert stat.S_IMODE(os.stat(spool_dir).st_mode) == 0o700
        for p in files:
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p


def test_new_spool_dir_is_private_under_umask_0(tmp_path):
    from ara_spool.spool import writer

    old = os.umask(0)
    try:
        d = tmp_path / "fresh"
        writer.append("umask-0", "event", {"task": "t", "status": "ok", "host": "h"}, spool_dir=d)
    finally:
        os.umask(old)
    if not group_shared():
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(d / "umask-0.jsonl").st_mode) == 0o600
