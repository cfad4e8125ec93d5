"""Whether kopf's peering pauses this replica, read from the peering object as kopf reads it.

kopf pauses its own watches while a live peer has a higher priority, or another live peer has the
same one, but it tells handlers nothing. The operator's own background work (the work queue, the
resync, the pool watcher) follows the same peering object with the same rule, so that a paused
replica writes nothing.

kopf excludes itself from the peers by its identity, which handlers never learn; so a priority
is contested here when two or more live entries carry it (this replica's own and another's).

`blockers` is the pure rule; `Pause` holds the outcome for the background tasks to wait on.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

DEFAULT_LIFETIME_S = 60  # kopf's Peer default


def _live_priority(entry: Any, now: datetime.datetime) -> int | None:
    """A peer's priority while its keep-alive holds (kopf: lastseen + lifetime > now); None when it
    expired, or is not an entry kopf would have written."""
    if not isinstance(entry, Mapping):
        return None
    try:
        lastseen = datetime.datetime.fromisoformat(str(entry["lastseen"])) if entry.get("lastseen") else now
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=datetime.UTC)
        lifetime = datetime.timedelta(seconds=int(entry.get("lifetime", DEFAULT_LIFETIME_S)))
        priority = int(entry.get("priority", 0))
    except (TypeError, ValueError):
        return None
    return priority if lastseen + lifetime > now else None


def blockers(peering: Mapping[str, Any] | None, priority: int, now: datetime.datetime) -> list[str]:
    """The identities of the live peers that pause a replica of `priority`; empty when it may act."""
    peers = ((peering or {}).get("status") or {}) if isinstance(peering, Mapping) else {}
    live = {name: theirs for name, entry in peers.items() if (theirs := _live_priority(entry, now)) is not None}
    higher = sorted(name for name, theirs in live.items() if theirs > priority)
    equal = sorted(name for name, theirs in live.items() if theirs == priority)
    return higher + (equal if len(equal) > 1 else [])


class Pause:
    """The pause state of each followed peering object (None: the cluster-wide one; else a
    namespace); the operator acts only while none of them pauses it."""

    def __init__(self, *, paused_until_known: bool) -> None:
        # kopf starts paused when peering is mandatory, until the peering object says otherwise.
        self.paused_until_known = paused_until_known
        self._paused: dict[str | None, bool] = {}
        self._active = asyncio.Event()
        self._active.set()

    def follow(self, scope: str | None) -> bool:
        """Start following a scope; False when it is already followed."""
        if scope in self._paused:
            return False
        self._paused[scope] = self.paused_until_known
        self._update()
        return True

    def set(self, scope: str | None, paused: bool) -> bool:
        """Record a scope's state; returns whether the operator's state changed."""
        was = self.paused
        self._paused[scope] = paused
        self._update()
        return was != self.paused

    @property
    def paused(self) -> bool:
        return any(self._paused.values())

    async def wait_active(self) -> None:
        await self._active.wait()

    def _update(self) -> None:
        if self.paused:
            self._active.clear()
        else:
            self._active.set()
