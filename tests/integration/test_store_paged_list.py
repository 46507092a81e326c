"""Paged reads on a real etcd: a control plane lists its state a page at a time, all
pages at one revision, so that no one answer passes the message limit (100,000 replicas
with their reports made a 72 MB answer, past the 64 MiB a control plane accepts: a
restarted one could not list its state). Small pages here stand for large ones."""

from __future__ import annotations

import asyncio
from typing import Any

from fleet.store import KeyLayout
from fleet.store._etcd import Etcd, prefix_end
from fleet.store.informer import Informer
from fleet.store.records import ReplicaRecord, ResourceAmounts
from fleet.testing import EtcdServer


def test_a_paged_read_is_every_key_at_one_revision(etcd_server: EtcdServer) -> None:
    prefix = b"/t-paged-read/"

    async def run() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            for i in range(50):
                await etcd.put(prefix + b"k%03d" % i, b"v")
            _, before = await etcd.get_all(prefix, prefix_end(prefix))
            for i in range(50, 60):
                await etcd.put(prefix + b"k%03d" % i, b"v")
            # At the revision read: the 50 of then, over 8 pages of 7.
            pages: list[int] = []
            get_range = etcd.get_range

            async def counted(*args: Any, **kwargs: Any) -> Any:
                found = await get_range(*args, **kwargs)
                pages.append(len(found[0]))
                return found

            etcd.get_range = counted  # type: ignore[method-assign]
            old, at = await etcd.get_all(prefix, prefix_end(prefix), revision=before, page=7)
            assert pages == [7] * 7 + [1]
            assert at == before
            assert [kv.key for kv in old] == [prefix + b"k%03d" % i for i in range(50)]
            now, _ = await etcd.get_all(prefix, prefix_end(prefix), page=7)
            assert len(now) == 60 and len({kv.key for kv in now}) == 60

    asyncio.run(run())


def test_the_informer_lists_its_state_page_by_page(etcd_server: EtcdServer) -> None:
    layout = KeyLayout("/t-paged-informer/")
    reserved = ResourceAmounts(cpu=0.1, memory=1 << 20)

    async def run() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            for slot in range(40):
                replica = ReplicaRecord(
                    app="web", slot=slot, revision=1, host=f"h{slot % 3}", resources=reserved
                )
                await etcd.put(layout.replica("web", slot), replica.dump())
            informer = Informer(etcd, layout, list_page=6)
            task = asyncio.create_task(informer.run())
            try:
                await asyncio.wait_for(informer.wait_synced(), 10)
                state = informer.state()
                assert sorted(state.replica_slots("web")) == list(range(40))
                assert {r.host for r in state.replicas_of("web")} == {"h0", "h1", "h2"}
            finally:
                task.cancel()

    asyncio.run(run())


def test_pages_read_the_next_page_while_the_caller_has_this_one(etcd_server: EtcdServer) -> None:
    """The next page's read is under way when a page is handed over (a restarted control
    plane decodes one page while etcd answers the next); a caller that stops early
    leaves no read behind."""
    prefix = b"/t-paged-ahead/"

    async def run() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            for i in range(20):
                await etcd.put(prefix + b"k%03d" % i, b"v")
            started: list[bytes] = []
            get_range = etcd.get_range

            async def counted(start: bytes, *args: Any, **kwargs: Any) -> Any:
                started.append(start)
                return await get_range(start, *args, **kwargs)

            etcd.get_range = counted  # type: ignore[method-assign]
            seen: list[tuple[int, int]] = []  # (keys in the page, reads started by then)
            revisions = set()
            async for kvs, at in etcd.pages(prefix, prefix_end(prefix), page=6):
                seen.append((len(kvs), len(started)))
                revisions.add(at)
            assert seen == [(6, 2), (6, 3), (6, 4), (2, 4)]
            assert len(revisions) == 1

            others = asyncio.all_tasks() - {asyncio.current_task()}
            pages = etcd.pages(prefix, prefix_end(prefix), page=6)
            async for _ in pages:
                break
            await pages.aclose()
            assert asyncio.all_tasks() - {asyncio.current_task()} == others

    asyncio.run(run())
