"""Multiprocess metric values that cost one locked write per update, in prometheus_client's files.

In multiprocess mode every counter increment, gauge set and histogram or summary observation
ends in prometheus_client's ``MmapedValue``, which per update takes a process-wide lock, calls
``os.getpid()`` (a system call) to notice a fork, looks its key up in a dict and then packs
the value into the worker's mmap'd file: a request's dozen updates cost ~3x what they cost in
one process. :class:`FileValue` keeps each sample's position in the file once it is created,
so an update is the lock, an add and one ``pack_into``; a fork is noticed by
``os.register_at_fork`` instead of a ``getpid()`` per update. It writes the same files in the
same layout through prometheus_client's own ``MmapedDict``, so ``MultiProcessCollector`` and
``mark_process_dead`` read them unchanged, and every update is in the file before the call
returns (a scrape of another worker sees it at once).

:func:`install` makes it prometheus_client's value class; it must run before the first
metric of the process is created (:mod:`serving.monitoring.metrics` calls it first thing).
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path
from typing import Any

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict, mmap_key

_pack = struct.Struct("dd").pack_into
_lock = threading.Lock()  # one per process, as prometheus_client's: updates come from threads
_files: dict[str, MmapedDict] = {}
_values: list[FileValue] = []
_state: dict[str, Any] = {"pid": os.getpid(), "directory": ""}


class FileValue:
    """One sample (a counter, a gauge, one bucket, a sum, ...) of this process, kept in the
    process's file for its metric type (prometheus_client's value-class interface)."""

    _multiprocess = True

    def __init__(
        self,
        typ: str,
        metric_name: str,
        name: str,
        labelnames: Any,
        labelvalues: Any,
        help_text: str,
        multiprocess_mode: str = "",
        **_: Any,
    ) -> None:
        self._prefix = f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ
        self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
        with _lock:
            self._open()
            _values.append(self)

    def _open(self) -> None:
        # Under _lock. A new key may grow the file (a new mmap), never move a key.
        file = _files.get(self._prefix)
        if file is None:
            path = Path(_state["directory"]) / f"{self._prefix}_{_state['pid']}.db"
            file = _files[self._prefix] = MmapedDict(str(path))  # type: ignore[no-untyped-call]
        self._file = file
        self._value: float = file.read_value(self._key)[0]  # type: ignore[no-untyped-call]
        self._pos: int = file._positions[self._key]

    def inc(self, amount: float) -> None:
        with _lock:
            self._value += amount
            _pack(self._file._m, self._pos, self._value, 0.0)

    def set(self, value: float, timestamp: float | None = None) -> None:
        with _lock:
            self._value = value
            _pack(self._file._m, self._pos, value, timestamp or 0.0)

    def set_exemplar(self, exemplar: Any) -> None:
        return  # prometheus_client keeps no exemplars in multiprocess mode either

    def get(self) -> float:
        with _lock:
            return self._value

    def get_exemplar(self) -> None:
        return None


def _after_fork() -> None:
    # A forked child writes files of its own pid, starting from zero (as prometheus_client).
    _state["pid"] = os.getpid()
    for file in _files.values():
        file.close()  # type: ignore[no-untyped-call]
    _files.clear()
    for value in _values:
        value._open()


def install(directory: str) -> None:
    """Make :class:`FileValue` the value class of the metrics created from now on, writing to
    ``directory`` (``PROMETHEUS_MULTIPROC_DIR``). Refuses once this process has metric files:
    two writers of one file would corrupt it."""
    if values.ValueClass is FileValue:
        return
    pid = os.getpid()
    if any(Path(directory).glob(f"*_{pid}.db")):
        raise RuntimeError("metric_files.install() must run before any metric is created")
    _state.update(pid=pid, directory=directory)
    values.ValueClass = FileValue
    os.register_at_fork(after_in_child=_after_fork)
