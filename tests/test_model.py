"""A property-based model of the delivery contract (hypothesis, stateful), against the real Ara.

Random interleavings of: appends from several writers to two runs, torn writes (a writer killed
mid-line), bad lines, flushes through a fault proxy (lost responses, 5xx, dropped requests, slow
responses, late commits, empty 2xx bodies), Ara losing a run (its playbook deleted, as a database
reset does), and flusher crashes (the flush task cancelled at a
random await point with its final checkpoint suppressed, as after a SIGKILL). The model is what
Ara must hold: per run, the good events in spool order. The flusher ships with a window (8
requests in flight, 10 hosts): after every step Ara holds, for each host, a prefix of that host's
events (never a duplicate, never out of order); after a last clean flush, all of it, and every bad
line is in the quarantine.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from ara_spool.flusher import oneshot
from ara_spool.flusher.config import Config
from ara_spool.spool import schema, writer
from ara_spool.spool import state as state_mod
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from tests.ara import AraAPI, free_port
from tests.faultproxy import FaultProxy, Rule
from tests.runs import ara_per_host, per_host

# Set by the test from the session's fixtures: hypothesis builds machines without fixtures.
ENV: dict[str, Any] = {}
FIGURES = {"examples": 0, "steps": 0, "appends": 0, "torn": 0, "bad": 0, "flushes": 0, "crashes": 0,
           "faults": {}, "duplicate_quarantine_records": 0, "resets": 0}

FAULTS = {
    "none": lambda: [],
    "lose-results": lambda: [Rule("lose", "POST", "/api/v1/results", every=2)],
    "lose-tasks-plays": lambda: [Rule("lose", "POST", "/api/v1/tasks"), Rule("lose", "POST", "/api/v1/plays")],
    "lose-playbook": lambda: [Rule("lose", "POST", "/api/v1/playbooks", times=1)],
    "5xx-burst": lambda: [Rule("respond", "POST", "/api/v1/results", times=3, status=503)],
    "drop": lambda: [Rule("drop", "POST", None, every=3)],
    "slow": lambda: [Rule("delay", "POST", "/api/v1/results", times=1, seconds=1.3)],
    "lose-lookups": lambda: [Rule("lose", "GET", "/api/v1/results", every=2, times=2),
                             Rule("lose", "POST", "/api/v1/results", every=3)],
    # Ara commits a result after the client gave up on it (1 s): the read-back removes the double.
    "late-commit": lambda: [Rule("late", "POST", "/api/v1/results", every=2, times=2, seconds=1.5)],
    # Ara commits, the answer is empty: a server fault (the flush stops, the next one reads back).
    "empty-body": lambda: [Rule("empty", "POST", "/api/v1/results", every=2, times=1)],
}


class ProxyThread:
    """The fault proxy on its own event loop in a thread, so each flush can use asyncio.run."""

    def __init__(self, upstream: str) -> None:
        self.fp = FaultProxy(upstream)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(self.fp.app())
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class SpoolModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        FIGURES["examples"] += 1
        self.dir = Path(tempfile.mkdtemp(prefix="ara-spool-model-"))
        self.spool_dir = self.dir / "spool"
        tag = uuid.uuid4().hex[:8]
        self.runs = [f"model-{tag}-{i}" for i in range(2)]
        # (host, ts) of good events, spool order
        self.expected: dict[str, list[tuple[str, str]]] = {r: [] for r in self.runs}
        self.bad: dict[str, set[int]] = {r: set() for r in self.runs}  # offsets that must be quarantined
        self.torn: dict[str, int | None] = {r: None for r in self.runs}  # offset of a torn tail
        self.clock = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=hash(tag) % 500)
        self.direct = Config(server=ENV["ara"], spool_dir=self.spool_dir, timeout=10, max_backoff=0.3,
                             checkpoint_every=3, window=8)
        self.proxied = Config(server=ENV["proxy"].url, spool_dir=self.spool_dir, timeout=1, max_backoff=0.2,
                              checkpoint_every=3, window=8)
        self.api = AraAPI(ENV["ara"])
        self.flushed = False  # a flush or crash ran: Ara may hold something to lose

    def _size(self, run: str) -> int:
        p = self.spool_dir / f"{run}.jsonl"
        return p.stat().st_size if p.exists() else 0

    def _healed(self, run: str) -> None:
        # The next whole line ends a torn tail: the fragment becomes one bad line.
        if self.torn[run] is not None:
            self.bad[run].add(self.torn[run])
            self.torn[run] = None

    @rule(run=st.integers(0, 1), writer_no=st.integers(0, 2), n=st.integers(1, 4))
    def append(self, run: int, writer_no: int, n: int) -> None:
        run_id = self.runs[run]
        for i in range(n):
            self.clock += timedelta(milliseconds=7)
            ts = self.clock.isoformat(timespec="microseconds")
            host = f"h{(writer_no * 4 + i + len(self.expected[run_id])) % 10}"
            writer.append(run_id, "event", {"task": f"w{writer_no}", "status": "ok", "host": host,
                                            "details": {"ts": ts}}, spool_dir=self.spool_dir, ts=ts)
            self._healed(run_id)
            self.expected[run_id].append((host, ts))
            FIGURES["appends"] += 1

    @rule(run=st.integers(0, 1), cut=st.integers(1, 60))
    def torn_write(self, run: int, cut: int) -> None:
        """A writer killed mid-line: the first `cut` bytes of a line, no newline."""
        run_id = self.runs[run]
        if self.torn[run_id] is not None:
            return
        line = writer.encode(schema.make_event(run_id, "event", {"task": "x", "status": "ok", "host": "h"}))
        self.spool_dir.mkdir(mode=0o700, exist_ok=True)
        at = self._size(run_id)
        with open(self.spool_dir / f"{run_id}.jsonl", "ab") as fh:
            fh.write(line[:min(cut, len(line) - 2)])
        self.torn[run_id] = at
        FIGURES["torn"] += 1

    @rule(run=st.integers(0, 1), raw=st.sampled_from([b"{oops", b"[1]", b'{"v":7}', b"\xff\xfe", b""]))
    def bad_line(self, run: int, raw: bytes) -> None:
        run_id = self.runs[run]
        self.spool_dir.mkdir(mode=0o700, exist_ok=True)
        at = self._size(run_id)
        with open(self.spool_dir / f"{run_id}.jsonl", "ab") as fh:
            fh.write(raw + b"\n")
        if self.torn[run_id] is not None:  # it ends the torn fragment: one bad line
            at = self.torn[run_id]
            self.torn[run_id] = None
        self.bad[run_id].add(at)
        FIGURES["bad"] += 1

    @rule(fault=st.sampled_from(sorted(FAULTS)))
    def flush(self, fault: str) -> None:
        ENV["proxy"].fp.rules = FAULTS[fault]()
        FIGURES["faults"][fault] = FIGURES["faults"].get(fault, 0) + 1
        FIGURES["flushes"] += 1
        self.flushed = True
        outcomes = asyncio.run(oneshot.flush(self.proxied, self._existing(), timeout=6))
        allowed = ("done", "unreachable", "server") if fault == "empty-body" else ("done", "unreachable")
        assert all(o.status in allowed for o in outcomes), outcomes
        ENV["proxy"].fp.rules = []

    @rule(fault=st.sampled_from(["none", "lose-results", "slow", "5xx-burst"]), delay=st.floats(0.0, 0.4))
    def crash(self, fault: str, delay: float) -> None:
        """Cancel a flush at a random await point, without its final checkpoint (like SIGKILL)."""
        ENV["proxy"].fp.rules = FAULTS[fault]()
        FIGURES["crashes"] += 1
        self.flushed = True

        async def go() -> None:
            task = asyncio.create_task(oneshot.flush(self.proxied, self._existing(), timeout=6))
            await asyncio.sleep(delay)
            ENV["frozen"] = True
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: B036 - cancelled (or finished) either way
                pass
            ENV["frozen"] = False

        asyncio.run(go())
        ENV["proxy"].fp.rules = []

    @precondition(lambda self: self.flushed)
    @rule(run=st.integers(0, 1))
    def reset(self, run: int) -> None:
        """Ara loses the run between flushes, as a database reset loses it: its playbook (and, by
        Ara's cascade, every play, task, host and result of it) is deleted. The ids the checkpoint
        holds now name nothing: the next flush must find that out and ship the run again, once."""
        for pb in self.api.playbooks_for(self.runs[run]):
            req = urllib.request.Request(f"{ENV['ara']}/api/v1/playbooks/{pb['id']}", method="DELETE")
            urllib.request.urlopen(req, timeout=30).close()
            FIGURES["resets"] += 1

    def _existing(self) -> list[str]:
        return [r for r in self.runs if (self.spool_dir / f"{r}.jsonl").exists()]

    def _ara(self, run: str) -> dict[str, list[datetime]]:
        pbs = self.api.playbooks_for(run)
        assert len(pbs) <= 1, f"{len(pbs)} playbooks for {run}"
        if not pbs:
            return {}
        return ara_per_host(self.api, run)

    def _want(self, run: str) -> dict[str, list[datetime]]:
        return per_host([(h, schema.parse_time(t)) for h, t in self.expected[run]])

    @invariant()
    def ara_holds_a_prefix(self) -> None:
        FIGURES["steps"] += 1
        for run in self.runs:
            got, want = self._ara(run), self._want(run)
            for host, times in got.items():
                assert times == want.get(host, [])[:len(times)], \
                    f"{run}: Ara is not a prefix of host {host}'s events ({len(times)} vs {len(want.get(host, []))})"

    def teardown(self) -> None:
        try:
            ENV["proxy"].fp.rules = []
            if self._existing():
                outcomes = asyncio.run(oneshot.flush(self.direct, self._existing(), timeout=60))
                assert all(o.status == "done" for o in outcomes), outcomes
            for run in self.runs:
                assert self._ara(run) == self._want(run), run
                rejected = self.spool_dir / f"{run}.rejected.jsonl"
                offsets = [json.loads(x)["offset"] for x in rejected.read_text().splitlines()] \
                    if rejected.exists() else []
                assert set(offsets) == self.bad[run], run
                FIGURES["duplicate_quarantine_records"] += len(offsets) - len(set(offsets))
                if (self.spool_dir / f"{run}.jsonl").exists():
                    st_ = state_mod.load(state_mod.RunPaths.of(self.spool_dir, run))
                    end = self._size(run) if self.torn[run] is None else self.torn[run]
                    assert st_.offset == end and st_.clean
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def model_env(ara_server, monkeypatch):
    proxy = ProxyThread(ara_server.url)
    ENV.update(ara=ara_server.url, proxy=proxy, frozen=False)
    real_save = state_mod.save

    def save(paths, st, *, durable: bool = True) -> None:
        if ENV["frozen"]:  # the process is "dead": its last checkpoint stays as it was
            return
        real_save(paths, st, durable=durable)

    monkeypatch.setattr(state_mod, "save", save)
    yield
    proxy.close()


def test_delivery_model(model_env):
    run_state_machine_as_test(SpoolModel, settings=settings(
        max_examples=25, stateful_step_count=14, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    print(f"model figures: {FIGURES}")
    assert FIGURES["crashes"] > 0 and FIGURES["flushes"] > 0 and FIGURES["torn"] > 0 and FIGURES["resets"] > 0
