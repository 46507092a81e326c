"""Registrations take turns: a few at a time, and one that waits too long for its turn
is refused with the reason, not kept waiting behind thousands."""

from __future__ import annotations

import asyncio

import pytest

from fleet.controlplane.registering import RegistrationSlots
from fleet.errors import Unavailable


def test_at_most_so_many_registrations_hold_a_turn_at_once() -> None:
    async def scenario() -> None:
        slots = RegistrationSlots(3, wait=5)
        holding = most = 0
        release = asyncio.Event()

        async def register() -> None:
            nonlocal holding, most
            async with slots.turn():
                holding += 1
                most = max(most, holding)
                await release.wait()
                holding -= 1

        tasks = [asyncio.create_task(register()) for _ in range(10)]
        for _ in range(20):
            await asyncio.sleep(0)
        assert holding == 3
        release.set()
        await asyncio.gather(*tasks)  # each turn given back: the other seven had theirs
        assert most == 3 and holding == 0

    asyncio.run(scenario())


def test_a_registration_that_waits_too_long_for_its_turn_is_refused() -> None:
    async def scenario() -> None:
        slots = RegistrationSlots(1, wait=0.05)
        held = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with slots.turn():
                held.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await held.wait()
        with pytest.raises(Unavailable, match=r"1 registrations in progress .* 0\.05s"):
            async with slots.turn():
                pass
        release.set()
        await holder
        async with slots.turn():  # the refused wait took no turn away
            pass

    asyncio.run(scenario())


def test_a_turn_is_given_back_when_its_registration_fails() -> None:
    async def scenario() -> None:
        slots = RegistrationSlots(1, wait=0.05)
        with pytest.raises(RuntimeError):
            async with slots.turn():
                raise RuntimeError("etcd refused the transaction")
        async with slots.turn():
            pass

    asyncio.run(scenario())
