"""The read-back pass (anti-entropy): what Ara holds of a run, compared with its spool.

Exactly once is decided per request (flusher/reconcile.py), but one fault no lookup can see is a
create Ara commits *after* the flusher gave up on it and looked it up (a late commit): the retry
makes a second row. So at the end of a run, and after any ambiguous failure, the run's results are
listed (PAGE rows per request) and compared with the spool's result lines, matched on their key
(task, host, exact `started` instant):
- a line with no row is missing: the shipper ships it again;
- a key with more rows than lines is doubled: the rows kept are chosen, per host in spool order,
  as the lowest id above the one kept before it (so Ara's id order stays the host's spool order
  when it can); the others are deleted.
`expected()` and `compare()` are pure; `read_back()` does the I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ara_spool.flusher.identity import API, Requester, rows
from ara_spool.flusher.ids import AraIds
from ara_spool.flusher.mapping import explicit_result
from ara_spool.spool.reader import Line
from ara_spool.spool.schema import parse_time

Key = tuple[int, int, Any]  # task id, host id, started (an aware datetime)


@dataclass(frozen=True)
class Want:
    """A spool line that must be one result row in Ara."""

    offset: int
    host: str
    task_uuid: str
    started: str


@dataclass
class Diff:
    missing: list[int] = field(default_factory=list)  # offsets of lines with no row
    doubles: list[int] = field(default_factory=list)  # result ids to delete
    out_of_order: int = 0  # lines whose kept row could not keep the host's spool order
    rows: int = 0
    unknown: int = 0  # lines whose task or host the checkpoint has no id for (not compared)


def expected(lines: Iterable[Line], skip: set[int]) -> list[Want]:
    """The spool's result lines (results and explicit events), in spool order, without `skip`
    (quarantined) offsets and lines of other runs."""
    out = []
    for line in lines:
        ev = line.event
        if ev is None or line.offset in skip:
            continue
        try:
            if ev["kind"] == "result":
                r = ev["result"]
                out.append(Want(line.offset, str(r["host"]), r["task_uuid"], r["started"]))
            elif ev["kind"] == "event":
                task, result, _ = explicit_result(ev["run"], ev)
                out.append(Want(line.offset, result["host"], task["uuid"], result["started"]))
        except (KeyError, TypeError, ValueError, ArithmeticError):
            continue  # a line the shipper quarantines
    return out


def _key(task: int, host: int, started: str) -> Key | None:
    try:
        return task, host, parse_time(started)
    except (TypeError, ValueError):
        return None


def compare(wants: list[Want], found: list[dict[str, Any]], ids: AraIds) -> Diff:
    """Which lines Ara lacks and which rows are doubles (see the module's docstring)."""
    diff = Diff(rows=len(found))
    by_key: dict[Key, list[int]] = {}
    for row in found:
        key = _key(row.get("task"), row.get("host"), row.get("started"))
        if key is not None:
            by_key.setdefault(key, []).append(row["id"])
    for ids_of_key in by_key.values():
        ids_of_key.sort()
    last: dict[str, int] = {}  # host -> id kept for its previous line
    for want in wants:
        task, host = ids.tasks.get(want.task_uuid), ids.hosts.get(want.host)
        key = None if task is None or host is None else _key(task, host, want.started)
        if key is None:
            diff.unknown += 1
            continue
        pool = by_key.get(key)
        if not pool:
            diff.missing.append(want.offset)
            continue
        i = bisect.bisect_right(pool, last.get(want.host, 0))
        if i == len(pool):  # no row above the previous one's: keep the lowest, order is broken
            i = 0
            diff.out_of_order += 1
        last[want.host] = max(last.get(want.host, 0), pool.pop(i))
    expected_keys = set()
    for want in wants:
        task, host = ids.tasks.get(want.task_uuid), ids.hosts.get(want.host)
        if task is not None and host is not None:
            expected_keys.add(_key(task, host, want.started))
    for key, left in by_key.items():
        if key in expected_keys:  # rows of a line beyond the lines that want them: doubles
            diff.doubles.extend(left)
    diff.doubles.sort()
    return diff


@dataclass
class Report:
    diff: Diff
    requests: int
    deleted: int = 0


async def read_back(client: Requester, playbook: int, wants: list[Want], ids: AraIds) -> Report:
    """List the playbook's results, compare them with `wants`, delete the doubles."""
    requests = 0

    class Counting:
        async def request(self, *args: Any, **kw: Any) -> dict[str, Any]:
            nonlocal requests
            requests += 1
            return await client.request(*args, **kw)

    found = [row async for row in rows(Counting(), "results", playbook=playbook)]
    diff = compare(wants, found, ids)
    report = Report(diff, requests)
    for rid in diff.doubles:
        await client.request("DELETE", f"{API}/results/{rid}")
        report.requests += 1
        report.deleted += 1
    return report
