"""peering.blockers: kopf's pause rule, read from the peering object; Pause: the operator-wide state."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from gemma_operator.peering import Pause, blockers

NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)


def peer(priority, seen_s_ago=5, lifetime=60):
    seen = NOW - datetime.timedelta(seconds=seen_s_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


@pytest.mark.parametrize(
    ("peers", "blocking"),
    [
        ({}, []),
        ({"me": peer(100)}, []),  # alone
        ({"me": peer(100), "old": peer(50)}, []),  # a lower priority peer waits for us
        ({"me": peer(100), "new": peer(200)}, ["new"]),  # demoted
        ({"me": peer(100), "new": peer(200, seen_s_ago=61)}, []),  # its keep-alive expired: dead
        ({"me": peer(100), "gone": peer(200, lifetime=0)}, []),  # said goodbye
        ({"me": peer(100), "twin": peer(100)}, ["me", "twin"]),  # equal priorities: kopf pauses both
        ({"twin": peer(100)}, []),  # not announced yet: indistinguishable from being alone
        ({"me": peer(100), "odd": "not a peer", "bad": {"priority": 300, "lastseen": "yesterday"},
          "worse": {"priority": "high"}}, []),
        ({"me": peer(100), "new": {"priority": 200}}, ["new"]),  # no lastseen: kopf takes it as just seen
    ],
)
def test_blockers_follow_kopfs_rule(peers, blocking):
    assert blockers({"status": peers}, 100, NOW) == blocking


def test_no_object_or_no_status_blocks_nothing():
    assert blockers(None, 100, NOW) == [] and blockers({"metadata": {"name": "gemma"}}, 100, NOW) == []


def test_pause_holds_the_work_until_every_followed_scope_is_clear():
    async def scenario():
        pause = Pause(paused_until_known=True)
        assert not pause.paused  # nothing followed (standalone, or no namespace in use yet)
        assert pause.follow(None) and not pause.follow(None)
        assert pause.paused  # mandatory peering: paused until the object says otherwise
        waiter = asyncio.create_task(pause.wait_active())
        await asyncio.sleep(0)
        assert not waiter.done()
        assert pause.set(None, False) and not pause.set(None, False)
        await asyncio.wait_for(waiter, 1)
        pause.follow("team-a")
        pause.set("team-a", False)
        assert pause.set(None, True) and pause.paused
        return True

    assert asyncio.run(scenario())
