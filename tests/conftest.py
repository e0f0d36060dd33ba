from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from ara_spool.flusher.config import Config

from tests.ara import AraAPI, AraServer
from tests.faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="session")
def ara_server(tmp_path_factory: pytest.TempPathFactory):
    """One real Ara server for the session (gunicorn, 2 sync workers, sqlite)."""
    server = AraServer(tmp_path_factory.mktemp("ara-base"), kind="gunicorn", workers=2)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def ara(ara_server: AraServer) -> AraAPI:
    return AraAPI(ara_server.url)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    d = tmp_path / "spool"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def cfg(ara_server: AraServer, spool_dir: Path) -> Config:
    c = Config(server=ara_server.url, spool_dir=spool_dir, timeout=15, max_backoff=1.0)
    c.check()
    return c


@pytest.fixture
def cli_env(ara_server: AraServer, spool_dir: Path) -> dict[str, str]:
    """Environment for running `ara-spool` as a subprocess against the session's Ara."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARA_", "ANSIBLE_"))}
    env.update({"ARA_API_SERVER": ara_server.url, "ARA_SPOOL_DIR": str(spool_dir),
                "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"})
    return env


@pytest.fixture
async def proxy(aiohttp_server, ara_server: AraServer) -> FaultProxy:
    """A fault-injecting proxy (tests/faultproxy.py) in front of the session's Ara, in the test's loop."""
    fp = FaultProxy(ara_server.url)
    server = await aiohttp_server(fp.app(), host="127.0.0.1")
    fp.url = str(server.make_url("")).rstrip("/")
    return fp
