"""Run an Engine over many images on all cores: one Engine per worker process.

Used by the CLI and the benchmarks. A worker never dies on a bad image: the per-image function's
``RegardError`` is returned as the result, so one corrupt file costs one line, not the batch.
Results come back in input order.

Workers are started by a fork server, never by a plain fork: yuface runs on OpenMP (libgomp),
whose thread pool does not survive ``fork()`` once the parent has used it, and a forked worker
then hangs on its first detection. Each worker runs single-threaded (OpenMP and ONNX Runtime), so
N workers use N cores instead of N x all cores.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterator, Sequence, TypeVar

from regard.analysis import Engine
from regard.errors import RegardError

T = TypeVar("T")
ImageTask = Callable[[Engine, Any], T]

_worker_engine: Engine | None = None
_worker_task: ImageTask | None = None


def _init_worker(engine_kwargs: dict[str, Any], task: ImageTask) -> None:
    global _worker_engine, _worker_task
    # Before any native library is loaded in this fresh process: one thread each.
    os.environ["OMP_NUM_THREADS"] = "1"
    _worker_engine = Engine(**{"threads": 1, **engine_kwargs})
    _worker_task = task


def _run_one(item: Any) -> Any:
    assert _worker_engine is not None and _worker_task is not None
    return _safe(_worker_task, _worker_engine, item)


def _safe(task: ImageTask, engine: Engine, item: Any) -> Any:
    try:
        return task(engine, item)
    except RegardError as exc:
        return exc


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def map_images(
    task: ImageTask,
    items: Sequence[Any],
    *,
    workers: int | None = None,
    engine_kwargs: dict[str, Any] | None = None,
    chunksize: int = 1,
) -> Iterator[Any]:
    """Yield ``task(engine, item)`` (or the RegardError it raised) for each item, in order.

    ``chunksize`` 1 by default: images differ in cost by 100x (a portrait vs a crowd), and larger
    chunks leave one worker finishing a heavy chunk while the other idles.
    ``task`` must be a module-level function (it is pickled to the workers). With one worker or one
    item everything runs in this process, which keeps small calls fast and debuggable.
    """
    engine_kwargs = engine_kwargs or {}
    workers = workers or default_workers()
    if workers <= 1 or len(items) <= 1:
        engine = Engine(**engine_kwargs)
        for item in items:
            yield _safe(task, engine, item)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(engine_kwargs, task),
    ) as pool:
        yield from pool.map(_run_one, items, chunksize=chunksize)

