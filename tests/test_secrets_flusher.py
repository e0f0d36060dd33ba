"""Secrets on the flusher side: a token or password given to the flusher is sent to Ara (in the
Authorization header) and nowhere else: not in the spool, state or quarantine files, not in the
argv of the processes we start, not in the flusher's output at -vv, not in an auth error. Spool
files are private (dir 0700, files 0600) even under umask 0."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import subprocess
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


# -- a password given in the URL (ARA_API_SERVER=http://alice:PW@host) ---------------------------
URL_PASSWORD = "urlpw-S3cr3t-91ab-do-not-leak"


def _url_with_password(url: str) -> str:
    return url.replace("://", f"://alice:{URL_PASSWORD}@", 1)


@pytest.mark.parametrize("case", ["alone", "with-username", "bad-timeout", "missing-ca-bundle", "on-argv"])
@pytest.mark.parametrize("command", ["flush", "status", "verify"])
def test_url_credentials_refused_at_start_never_printed(cli_env, ara_server, spool_dir, case, command):
    """Every error path of every command: a clear error naming what to do, the password nowhere."""
    emit_events(spool_dir, "url-pw", 3, hosts=1)
    env = dict(cli_env, ARA_API_SERVER=_url_with_password(ara_server.url))
    argv = [sys.executable, "-m", "ara_spool.flusher", "-vv", command]
    if case == "with-username":
        env["ARA_API_USERNAME"] = "alice"
    elif case == "bad-timeout":
        env["ARA_API_TIMEOUT"] = "abc"
    elif case == "missing-ca-bundle":
        env["ARA_API_CA_BUNDLE"] = "/nonexistent/ca.pem"
    elif case == "on-argv":
        env["ARA_API_SERVER"] = ara_server.url
        argv += ["--server", _url_with_password(ara_server.url)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert URL_PASSWORD not in text, text
    assert "Traceback" not in text, text
    if case == "bad-timeout":
        assert out.returncode == 2 and "ARA_API_TIMEOUT" in text
    elif case == "on-argv" and command == "status":  # status asks no Ara: argparse refuses, URL redacted
        assert out.returncode == 2 and "unrecognized arguments: --server http://127.0.0.1:" in text, text
    else:  # the URL is checked first (a missing CA bundle is reported once it is fixed)
        assert out.returncode == 2 and "credentials in the URL" in text and "ARA_API_PASSWORD" in text, text
    leaked = [p for p, data in _files_under(spool_dir).items() if URL_PASSWORD.encode() in data]
    assert not leaked, f"password in {leaked}"


@pytest.mark.parametrize("extra", [{}, {"ARA_API_TIMEOUT": "abc"}])
def test_play_with_url_password_warns_with_the_cause_and_a_redacted_command(tmp_path, ara_server, extra):
    """A real play: the warning gives the flusher's real cause and a retry command without the
    password (it says how to pass the credential instead); no output, log or file has it."""
    from tests.ansible_run import ansible_env, run_playbook

    spool = tmp_path / "spool"
    env = ansible_env(tmp_path, spool, _url_with_password(ara_server.url), **extra)
    proc = run_playbook(env, "multi_play.yml", "-e", "ara_enabled=true", "-e", "ara_run_id=url-pw-play",
                        timeout=180)
    text = proc.stdout + proc.stderr
    assert URL_PASSWORD not in text, text
    cause = "ARA_API_TIMEOUT" if extra else "credentials in the URL"
    assert cause in text, text
    assert f"--server {ara_server.url} " in text and "credentials by environment" in text, text
    leaked = [p for p, data in _files_under(spool).items() if URL_PASSWORD.encode() in data]
    assert not leaked, f"password in {leaked}"
