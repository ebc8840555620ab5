"""The model store: alias polling and atomic swaps, rejection of bad versions, pinned LRU."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from serving.errors import ModelNotFound, ModelNotReady, ModelUnservable, RegistryUnavailable
from serving.inference.model import LoadedModel, load_version
from serving.inference.model_store import ModelStore
from serving.inference.registry import Registry, VersionInfo
from serving.monitoring.metrics import MODEL_LOADS
from tests.serving.support import MODEL, ServingRegistry

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the run


class CountingLoader:
    """The real loader, counting calls; ``fake`` versions load as stand-ins instantly."""

    def __init__(self, fake: tuple[str, ...] = ()) -> None:
        self.calls: list[str] = []
        self.fake = fake

    def __call__(self, registry: Registry, info: VersionInfo) -> LoadedModel:
        self.calls.append(info.version)
        if info.version in self.fake:
            return LoadedModel(MODEL, info.version, None, None, (), None, time.time())
        return load_version(registry, info)


class Clock:
    """The backoff's clock: it moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store_for(
    registry: ServingRegistry,
    loader: Callable[[Registry, VersionInfo], LoadedModel] | None = None,
    alias: str = "production",
    pinned_max: int = 4,
    timeout: float = 10,
    clock: Callable[[], float] = time.monotonic,
) -> ModelStore:
    return ModelStore(
        Registry(registry.uri, MODEL, timeout),
        alias=alias,
        reload_interval=0.05,
        pinned_max=pinned_max,
        registry_timeout=timeout,
        loader=loader or CountingLoader(),
        clock=clock,
    )


def failed_loads(reason: str | None = None) -> float:
    """Rejected reloads (of ``reason``, or of any), read from the default registry."""
    from prometheus_client import REGISTRY

    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name != MODEL_LOADS._name:
            continue
        for sample in metric.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_total")
                and labels["kind"] == "reload"
                and labels["outcome"] == "rejected"
                and (reason is None or labels["reason"] == reason)
            ):
                total += sample.value
    return total


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_no_model_until_the_first_refresh_then_the_alias_version(registry: ServingRegistry) -> None:
    async def scenario() -> None:
        store = store_for(registry)
        assert not store.ready
        with pytest.raises(ModelNotReady, match="starting"):
            store.require_production()
        assert await store.refresh() is True
        assert store.ready
        assert store.require_production().version == "1"
        assert await store.refresh() is False  # same version: nothing to do

    run(scenario())


def test_a_new_alias_version_is_swapped_in_and_the_old_one_kept_for_pinning(
    registry: ServingRegistry,
) -> None:
    async def scenario() -> None:
        loader = CountingLoader()
        store = store_for(registry, loader)
        await store.refresh()
        held = store.require_production()  # a request in flight holds this one
        registry.set_alias("2")
        assert await store.refresh() is True
        assert store.require_production().version == "2"
        assert held.version == "1"
        assert held.predict(held.example).shape == (5,)
        assert (await store.get("1")) is held  # the previous production, no reload
        registry.set_alias("1")
        assert await store.refresh() is True  # rollback: taken from the LRU
        assert loader.calls == ["1", "2"]

    run(scenario())


@pytest.mark.parametrize(
    ("broken", "reason"),
    [("3", "signature_mismatch"), ("4", "smoke_test_failed"), ("5", "load_failed")],
)
def test_a_broken_new_version_is_rejected_and_the_previous_keeps_serving(
    registry: ServingRegistry, broken: str, reason: str
) -> None:
    async def scenario() -> None:
        loader = CountingLoader()
        store = store_for(registry, loader, clock=Clock())
        await store.refresh()
        before = failed_loads(reason)
        registry.set_alias(broken)
        assert await store.refresh() is False
        assert store.require_production().version == "1"
        assert failed_loads(reason) - before == 1
        assert f"car-price/{broken} was rejected" in store.status
        assert "still serving car-price/1" in store.status
        assert await store.refresh() is False  # within the backoff: not loaded again
        assert loader.calls == ["1", broken]
        with pytest.raises(ModelUnservable):
            await store.get(broken)
        assert loader.calls == ["1", broken]

    run(scenario())


def test_a_broken_version_is_retried_after_a_backoff(
    registry: ServingRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        loader = CountingLoader()
        clock = Clock()
        store = store_for(registry, loader, clock=clock)
        registry.set_alias("4")
        assert await store.refresh() is False
        assert not store.ready
        await store.refresh()  # within the backoff: not retried
        assert loader.calls == ["4"]
        clock.now += 0.06  # past the backoff: reload_interval (0.05) * 1
        await store.refresh()
        assert loader.calls == ["4", "4"]
        clock.now += 0.06
        await store.refresh()  # second failure: backoff doubled (0.1), not retried yet
        assert loader.calls == ["4", "4"]
        clock.now += 0.06
        await store.refresh()
        assert loader.calls == ["4", "4", "4"]
        # Three failures the same way: one line in the log.
        rejected = [r for r in caplog.records if "car-price/4 was rejected" in r.getMessage()]
        assert len(rejected) == 1, [r.getMessage() for r in caplog.records]

    with caplog.at_level(logging.INFO, logger="serving"):
        run(scenario())


def test_a_deleted_alias_keeps_the_current_model(registry: ServingRegistry) -> None:
    async def scenario() -> None:
        registry.set_alias("2", "staging")
        store = store_for(registry, alias="staging")
        await store.refresh()
        registry.client().delete_registered_model_alias(MODEL, "staging")
        assert await store.refresh() is False
        assert store.require_production().version == "2"
        assert "gone" in store.status

    run(scenario())


def test_pinned_versions_are_loaded_once_and_kept_in_a_bounded_lru(
    registry: ServingRegistry,
) -> None:
    async def scenario() -> None:
        loader = CountingLoader(fake=("3", "4", "5"))
        store = store_for(registry, loader, pinned_max=2)
        await store.refresh()  # production: 1 (not in the LRU)
        await asyncio.gather(*(store.get("2") for _ in range(20)))  # one load for 20 waiters
        assert loader.calls == ["1", "2"]
        await store.get("3")
        await store.get("2")  # 2 is now the most recent, 3 the least
        await store.get("4")  # evicts 3
        await store.get("2")
        await store.get("3")  # loaded again
        assert loader.calls == ["1", "2", "3", "4", "3"]
        assert (await store.get("1")).version == "1"
        assert (await store.get("01")).version == "1"

    run(scenario())


@pytest.mark.parametrize("version", ["99", "abc", "1.0", "", "9" * 40])
def test_an_unknown_pinned_version_is_not_found(registry: ServingRegistry, version: str) -> None:
    with pytest.raises(ModelNotFound):
        run(store_for(registry).get(version))


def test_a_registry_that_hangs_is_given_up_after_the_timeout(registry: ServingRegistry) -> None:
    answer = threading.Event()

    class SlowRegistry(Registry):
        def get_version(self, version: str) -> VersionInfo | None:
            answer.wait(60)  # hangs until the test is done with it
            return None

    async def scenario() -> float:
        store = store_for(registry, timeout=0.2)
        store.registry = SlowRegistry(registry.uri, MODEL, 0.2)
        started = time.perf_counter()
        try:
            with pytest.raises(RegistryUnavailable, match="did not answer"):
                await store.get("2")
            return time.perf_counter() - started
        finally:
            answer.set()  # let the worker thread end (the loop waits for it on close)

    # Given up after 0.2 s, not after the 60 s the call would take (slack for a busy machine).
    assert run(scenario()) < 10


def test_the_poller_starts_and_stops(registry: ServingRegistry) -> None:
    async def scenario() -> None:
        store = store_for(registry)
        await store.start()
        assert await store.wait_ready(30)
        registry.set_alias("2")
        deadline = time.monotonic() + 10
        while store.require_production().version != "2":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await store.stop()
        assert np.isfinite(
            store.require_production().predict(store.require_production().example)
        ).all()

    run(scenario())


@pytest.mark.parametrize("turns", range(5))
def test_stop_ends_the_poller_even_when_a_registry_call_has_just_returned(
    registry: ServingRegistry, turns: int
) -> None:
    # The cause of a shutdown hang: on Python 3.11 asyncio.wait_for swallowed a cancellation
    # arriving in the few loop turns between a worker thread's return and the poller's wake-up;
    # the poller then polled on and stop() (the lifespan's shutdown) waited for it forever.
    entered, release = threading.Event(), threading.Event()

    class GatedRegistry(Registry):
        def version_for_alias(self, alias: str) -> VersionInfo | None:
            entered.set()
            release.wait(30)
            return None

    async def scenario() -> None:
        store = store_for(registry)
        store.registry = GatedRegistry(registry.uri, MODEL, 10)
        await store.start()
        async with asyncio.timeout(30):
            while not entered.is_set():  # the poller is in the call, in a worker thread
                await asyncio.sleep(0.005)
        release.set()
        time.sleep(0.05)  # the loop is busy while the call returns (as on a loaded machine)
        for _ in range(turns):  # its result travels to the poller, one loop turn at a time
            await asyncio.sleep(0)
        stopping = asyncio.create_task(store.stop())
        done, _ = await asyncio.wait([stopping], timeout=10)
        stopping.cancel()  # (if it hangs: cancels the poller again, so the test can end)
        assert done, "stop() did not return: the poller went on polling"

    run(scenario())
