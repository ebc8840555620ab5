"""Which model answers: the production model, kept current by a poller, and pinned versions.

* Production: ``models:/<name>@<alias>`` is resolved when the app starts and then every
  ``reload_interval`` seconds. A new version is loaded, checked and smoke-tested in a worker
  thread, off the request path, and swapped in with one assignment: a request holds the model it
  started with until it ends, so a swap never fails a request. A version that cannot be served
  is rejected (logged, counted) and the previous model keeps serving; it is retried with
  exponential backoff in case the failure was the registry's.
* Pinned versions (``/v2/models/<name>/versions/<v>``) are loaded on first use, one load per
  version however many requests wait for it, and kept in a small LRU with the model that was
  production before the last swap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from serving.errors import ModelNotFound, ModelNotReady, ModelUnservable, RegistryUnavailable
from serving.inference.model import LoadedModel, load_version
from serving.inference.registry import Registry, VersionInfo
from serving.monitoring.metrics import MODEL_INFO, MODEL_LOADS, MODEL_READY, MODEL_VERSION

log = logging.getLogger(__name__)

T = TypeVar("T")
Loader = Callable[[Registry, VersionInfo], LoadedModel]
_MAX_BACKOFF_FACTOR = 32


@dataclass(slots=True)
class _Failure:
    message: str
    count: int
    retry_at: float


class ModelStore:
    """The loaded models of one process, and the poller that keeps production current."""

    def __init__(
        self,
        registry: Registry,
        *,
        alias: str,
        reload_interval: float,
        pinned_max: int,
        registry_timeout: float,
        loader: Loader = load_version,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.name = registry.model_name
        self.alias = alias
        self.reload_interval = reload_interval
        self.registry_timeout = registry_timeout
        self._pinned_max = pinned_max
        self._loader = loader
        self._clock = clock  # of the retry backoff
        self._production: LoadedModel | None = None
        self._pinned: OrderedDict[str, LoadedModel] = OrderedDict()
        self._pinned_locks: dict[str, asyncio.Lock] = {}
        self._failures: dict[str, _Failure] = {}
        self._refresh_lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.status = f"starting: resolving {self.name}@{alias}"
        """Why no model is ready (or what is served), for 503 messages and logs."""

    # --- reading ---

    @property
    def production(self) -> LoadedModel | None:
        """The production model, None until one is loaded and smoke-tested."""
        return self._production

    @property
    def ready(self) -> bool:
        return self._production is not None

    def require_production(self) -> LoadedModel:
        """The production model, or :class:`ModelNotReady` saying why there is none."""
        model = self._production
        if model is None:
            raise ModelNotReady(f"no model is ready to serve: {self.status}")
        return model

    async def get(self, version: str | None = None) -> LoadedModel:
        """The production model (``version=None``) or that registered version, loaded on demand.

        Raises:
            ModelNotReady: no production model (``version=None`` only).
            ModelNotFound: ``version`` is not a registered version.
            ModelUnservable: the version exists but cannot be served.
            RegistryUnavailable: the registry could not be asked.
        """
        if version is None:
            return self.require_production()
        version = _normalise(version, self.name)
        production = self._production
        if production is not None and production.version == version:
            return production
        cached = self._pinned_hit(version)
        if cached is not None:
            return cached
        lock = self._pinned_locks.setdefault(version, asyncio.Lock())
        async with lock:
            cached = self._pinned_hit(version)
            if cached is not None:
                return cached
            self._raise_if_failed_recently(version)
            info = await self._registry(self.registry.get_version, version)
            if info is None:
                raise ModelNotFound(f"{self.name} has no version {version}")
            if info.status != "READY":
                raise ModelUnservable(
                    f"{self.name}/{version} is {info.status}, not READY", reason="not_ready"
                )
            try:
                model = await self._load(info, "pinned")
            except (ModelUnservable, RegistryUnavailable) as exc:
                log.warning("rejected %s/%s: %s", self.name, version, exc.message)
                raise
            self._remember(model)
        self._pinned_locks.pop(version, None)
        return model

    async def version_info(self, version: str | None = None) -> VersionInfo:
        """What the registry says of ``version`` (production's when None), without loading it."""
        if version is None:
            version = self.require_production().version
        version = _normalise(version, self.name)
        info = await self._registry(self.registry.get_version, version)
        if info is None:
            raise ModelNotFound(f"{self.name} has no version {version}")
        return info

    async def list_versions(self) -> list[VersionInfo]:
        """Every registered version, newest first, with its run's metrics."""
        return await self._registry(self.registry.list_versions)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a production model; whether there is one."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    # --- lifecycle ---

    async def start(self) -> None:
        """Start polling the alias (the first poll runs at once, in the background)."""
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_forever(), name="carprice-model-poller")

    async def stop(self) -> None:
        """Stop polling and drop the loaded models."""
        if self._poller is not None:
            self._poller.cancel()
            # Waits for the poller to end without taking its CancelledError for our own (a
            # cancellation of stop() itself still propagates).
            await asyncio.wait([self._poller])
            self._poller = None
        self._pinned.clear()
        MODEL_READY.set(0)

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # the poller must outlive any surprise; the next poll retries
                log.exception("model poll failed")
            await asyncio.sleep(self.reload_interval)

    async def refresh(self) -> bool:
        """Poll the alias once; load, check and swap in a new version. Whether it swapped."""
        async with self._refresh_lock:
            return await self._refresh()

    async def _refresh(self) -> bool:
        current = self._production
        try:
            info = await self._registry(self.registry.version_for_alias, self.alias)
        except RegistryUnavailable as exc:
            self._set_status(f"registry unavailable: {exc.message}", warn=True)
            return False
        if info is None:
            if current is None:
                self._set_status(f"no version of {self.name} has the alias {self.alias!r}")
            else:
                self._set_status(
                    f"the alias {self.alias!r} is gone; still serving {self.name}/"
                    f"{current.version}",
                    warn=True,
                )
            return False
        if current is not None and info.version == current.version:
            return False
        try:
            self._raise_if_failed_recently(info.version)
        except ModelUnservable:
            return False
        model = self._pinned.pop(info.version, None)
        if model is None:
            # A retry keeps the failure as the status, so failing the same way again is not
            # logged again: one line per outage, not one per retry.
            if current is None and info.version not in self._failures:
                self.status = f"starting: loading {self.name}/{info.version}"
            try:
                model = await self._load(info, "initial" if current is None else "reload")
            except (ModelUnservable, RegistryUnavailable) as exc:
                kept = f"; still serving {self.name}/{current.version}" if current else ""
                self._set_status(f"{self.name}/{info.version} was rejected: {exc.message}{kept}")
                return False
        self._production = model
        if current is not None:
            self._remember(current)
        MODEL_READY.set(1)
        MODEL_VERSION.set(float(model.version))
        if current is not None:
            MODEL_INFO.labels(current.name, current.version).set(0)
        MODEL_INFO.labels(model.name, model.version).set(1)
        self._ready.set()
        self.status = f"serving {self.name}/{model.version}"
        log.info(
            "now serving %s/%s (alias %s)%s",
            self.name,
            model.version,
            self.alias,
            f", was {current.version}" if current else "",
            extra={"fields": {"model_version": model.version}},
        )
        return True

    # --- helpers ---

    async def _registry(self, call: Callable[..., T], *args: object) -> T:
        """A blocking registry call in a worker thread, given up after ``registry_timeout``."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
        # arrives just as the call returns, so stop() would wait forever for a poller that
        # goes on polling (the lifespan's shutdown then hangs: uvicorn's, the TestClient's).
        try:
            async with asyncio.timeout(self.registry_timeout):
                return await asyncio.to_thread(call, *args)
        except TimeoutError as exc:
            raise RegistryUnavailable(
                f"the registry did not answer within {self.registry_timeout:g} s"
            ) from exc

    async def _load(self, info: VersionInfo, kind: str) -> LoadedModel:
        """Load in a worker thread; count (as ``kind``) and remember the outcome."""
        try:
            model = await asyncio.to_thread(self._loader, self.registry, info)
        except (ModelUnservable, RegistryUnavailable) as exc:
            # Not logged here: the caller says it once (the poller's status line, deduplicated
            # across retries; a pinned request's warning), so an outage is one line, not one
            # per retry.
            reason = exc.reason if isinstance(exc, ModelUnservable) else "registry_unavailable"
            MODEL_LOADS.labels(kind, "rejected", reason).inc()
            self._record_failure(info.version, exc.message)
            raise
        except Exception as exc:  # an unexpected loader error still only rejects the version
            MODEL_LOADS.labels(kind, "rejected", "load_failed").inc()
            message = f"{type(exc).__name__}: {exc}"
            self._record_failure(info.version, message)
            log.exception("rejected %s/%s", self.name, info.version)
            raise ModelUnservable(f"{self.name}/{info.version} failed to load: {message}") from exc
        MODEL_LOADS.labels(kind, "ok", "").inc()
        self._failures.pop(info.version, None)
        return model

    def _pinned_hit(self, version: str) -> LoadedModel | None:
        model = self._pinned.get(version)
        if model is not None:
            self._pinned.move_to_end(version)
        return model

    def _remember(self, model: LoadedModel) -> None:
        self._pinned[model.version] = model
        self._pinned.move_to_end(model.version)
        while len(self._pinned) > self._pinned_max:
            self._pinned.popitem(last=False)

    def _record_failure(self, version: str, message: str) -> None:
        previous = self._failures.get(version)
        count = previous.count + 1 if previous else 1
        delay = self.reload_interval * min(2 ** (count - 1), _MAX_BACKOFF_FACTOR)
        self._failures[version] = _Failure(message, count, self._clock() + delay)

    def _raise_if_failed_recently(self, version: str) -> None:
        failure = self._failures.get(version)
        if failure is not None and self._clock() < failure.retry_at:
            raise ModelUnservable(f"{self.name}/{version} cannot be served: {failure.message}")

    def _set_status(self, status: str, warn: bool = False) -> None:
        if status != self.status:
            (log.warning if warn or self._production is None else log.info)(status)
        self.status = status


def _normalise(version: str, name: str) -> str:
    """A registry version number as the registry spells it; unknown for anything else."""
    if not (version.isascii() and version.isdigit()) or len(version) > 12:
        raise ModelNotFound(f"{name} has no version {version[:32]!r}")
    return str(int(version))
