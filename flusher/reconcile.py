"""Exactly once against an Ara that cannot deduplicate: when to look a create up before sending it.

Ara has no idempotency key: a POST sent twice is two rows. A create may already be in Ara when
- the last flusher died (its checkpoint is not clean): any create after the checkpoint;
- this destination has no checkpoint (lost or unreadable state, a spool copied to another spool
  dir or machine, the same Ara under another URL) but Ara already holds a playbook labelled with the
  run's id: any create of the whole run;
- a response was lost (timeout, reset, 5xx): that one create, before it is sent again.
In the first two cases every create in a line before the spool's end *as it was when this flusher
started* is looked up (no earlier flusher can have shipped a line written after that), not only
up to the first one missing: a line quarantined or requeued earlier was never in Ara, and the
lines after it may be. Result lookups then match any result above the highest id the checkpoint
knew (its floor), not above the ones created since.
Lookups that define identity (the run's playbook, by its `run_id:` label) are always made. Hosts
and files are get-or-create in Ara and PATCHes are idempotent: they are replayed, never looked up.

`Reconciler` holds that policy and nothing else; `find()` runs one Lookup. The shipper drives
both (flusher/shipper.py); tests/test_reconcile.py exercises the policy without a server.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Protocol

from ara_spool.flusher import identity
from ara_spool.flusher.mapping import Call, Lookup
from ara_spool.spool.schema import parse_time

log = logging.getLogger("ara_spool.reconcile")


class Requester(Protocol):
    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      params: dict[str, Any] | None = None) -> dict[str, Any]: ...


class Reconciler:
    """Whether a create must be looked up before it is sent, and whether a create may be in Ara
    without us knowing its id (`uncertain`: the checkpoint must then not say clean). Several
    creates may be in flight at once (flusher/shipper.py's window): each reports on its own."""

    def __init__(self, run_id: str, *, after_crash: bool = False, fresh: bool = False, until: int = 0,
                 floor: int = 0) -> None:
        self.run_id = run_id
        self.until = until if (after_crash or fresh) else 0  # lines before this offset may be in Ara
        self.confirmed = after_crash  # the run is in this Ara (fresh: its playbook lookup decides)
        self.undecided = fresh
        self.floor = floor  # highest result id known before reconciling
        self._open = 0  # creates sent and not answered yet
        self._dangling = 0  # creates whose answer was lost and not resolved since

    @property
    def uncertain(self) -> bool:
        return self._open > 0 or self._dangling > 0

    def active(self, offset: int) -> bool:
        """Creates of the line at `offset` may be in Ara already."""
        return self.confirmed and offset < self.until

    def look_first(self, call: Call, ambiguous: bool, offset: int) -> bool:
        return call.lookup is not None and (call.lookup_first or ambiguous or self.active(offset))

    def lookup(self, call: Call, offset: int) -> Lookup:
        assert call.lookup is not None
        if self.active(offset) and call.lookup.min_id > self.floor:
            return replace(call.lookup, min_id=self.floor)
        return call.lookup

    def found(self, call: Call) -> None:
        if call.lookup_first and self.undecided:
            self.undecided = False
            self.confirmed = True
            log.warning("run %s: no checkpoint for this Ara, but it holds the run already: reconciling "
                        "the whole run (each create is looked up before it is sent)", self.run_id)

    def missed(self, call: Call) -> None:
        if call.lookup_first and self.undecided:
            self.undecided = False  # a run new to this Ara: nothing of it can be there yet

    def sending(self, call: Call) -> None:
        if call.creates:
            self._open += 1

    def answered(self, call: Call, *, stored_unknown: bool = False) -> None:
        """The create got an answer (`stored_unknown`: none that says whether Ara stored it)."""
        if call.creates:
            self._open -= 1
            self._dangling += stored_unknown

    def resolved(self) -> None:
        """A create whose answer was lost is settled: found in Ara, or refused, or stored now."""
        self._dangling -= 1


LOOKUP_PAGE = 200  # rows per GET of a lookup; it pages on until it has seen every candidate


async def find(client: Requester, lookup: Lookup) -> dict[str, Any] | None:
    """The object a Lookup describes, or None: the lowest id above min_id whose fields equal
    lookup.equal (times compared as instants). Complete: it pages through every candidate (Ara
    holds any number of results of one task and host), and a result is narrowed to its exact
    `started` instant first. A playbook looked up by its label must carry it exactly: Ara's filter
    ignores case, and run ids that differ in case are two runs."""
    params = {k: str(v) for k, v in lookup.params.items() if k not in ("limit", "offset")}
    started = lookup.equal.get("started")
    if lookup.path.endswith("/results") and isinstance(started, str):
        params["started_after"] = params["started_before"] = started
    label = params.get("label")
    best: dict[str, Any] | None = None
    offset = 0
    while True:
        data = await client.request("GET", lookup.path, params={**params, "limit": str(LOOKUP_PAGE),
                                                                "offset": str(offset)})
        page = data.get("results") or []
        for obj in page:
            if obj.get("id", 0) <= lookup.min_id:
                continue
            if label is not None and label not in identity.label_names(obj):
                continue
            if all(_same(obj.get(k), v, k) for k, v in lookup.equal.items()):
                if best is None or obj["id"] < best["id"]:
                    best = obj
        offset += len(page)
        if not page or not data.get("next"):
            return best


def _same(a: Any, b: Any, key: str) -> bool:
    if key in ("started", "ended") and isinstance(a, str) and isinstance(b, str):
        try:
            return parse_time(a) == parse_time(b)
        except ValueError:
            return False
    return a == b
