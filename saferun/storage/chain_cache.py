"""Each audit chain's verified prefix, remembered per process, so a checked read stops growing with history.

Issue 10's read path re-hashed a workflow's whole chain before serving any of its rows; a warm state load
then cost ~50-125x LangGraph's at 1 KB and grew with every event. This process already verified those
events, so it keeps, per workflow, the ``ChainFacts`` of the prefix it verified: its length and last hash
(what the workflow row's anchor must say) and what the events fix about the rows (``domain.chain_facts``).
A read then:

- compares the workflow row's anchor (``audit_seq``, ``audit_head``) with the remembered prefix: equal
  means no event was appended since, and the read hashes no event at all;
- otherwise reads only the events after the prefix, links them onto its last hash and folds them in;
  anything that does not fit (a shorter or different chain, a broken link) falls back to verifying the
  whole chain, which raises ``Tampered`` if it is broken;
- and always re-hashes the rows it serves against the remembered bindings (``check_read``).

What it does not do: notice an *old* event whose bytes were changed in the database after this process
verified it. The rows a read serves are still checked against the facts as they were verified, so such a
change cannot make a read serve a forged row; ``saferun audit verify`` re-reads every event and reports
it, and a process that starts fresh (empty cache) refuses the chain. docs/decisions.md has the full list.

Only what a process read itself is remembered: facts are stored only from reads that see committed rows
(never from a transaction that appended to that chain, which could still roll back). Other processes and
replicas extend chains all the time; their events are simply the "events after the prefix" above.
The cache is bounded (``SAFERUN_CHAIN_CACHE_ENTRIES``, least recently used out; 0 turns it off) and
kept per engine, so two databases in one process never share an entry.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

from sqlalchemy import Engine

from saferun.domain.chain_facts import ChainFacts


class ChainCache:
    """workflow id -> the facts of the longest prefix of its chain this process verified. Thread-safe:
    entries are immutable and replaced whole."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, ChainFacts] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, workflow_id: str) -> ChainFacts | None:
        if not self.capacity:
            return None
        with self._lock:
            facts = self._items.get(workflow_id)
            if facts is not None:
                self._items.move_to_end(workflow_id)
            return facts

    def put(self, facts: ChainFacts) -> None:
        """Remember ``facts`` unless a longer verified prefix is already known (a reader whose snapshot is
        older than another thread's must not shorten it)."""
        if not self.capacity:
            return
        with self._lock:
            known = self._items.get(facts.workflow_id)
            if known is not None and known.length > facts.length:
                return
            self._items[facts.workflow_id] = facts
            self._items.move_to_end(facts.workflow_id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def drop(self, workflow_id: str) -> None:
        with self._lock:
            self._items.pop(workflow_id, None)

    def clear(self) -> None:
        """Forget everything: the next read of each chain verifies it whole (as a fresh process would)."""
        with self._lock:
            self._items.clear()

    def __contains__(self, workflow_id: object) -> bool:
        with self._lock:
            return workflow_id in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


_caches: weakref.WeakKeyDictionary[Engine, ChainCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def for_engine(engine: Engine) -> ChainCache:
    """The cache of one engine (one database), made on first use with the configured capacity."""
    cache = _caches.get(engine)
    if cache is None:
        with _caches_lock:
            cache = _caches.get(engine)
            if cache is None:
                from saferun.config import get_settings

                cache = _caches[engine] = ChainCache(get_settings().chain_cache_entries)
    return cache
