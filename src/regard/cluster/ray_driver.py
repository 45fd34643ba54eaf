"""The driver side of a batch on Ray: connect, check the nodes, send chunks, gather outcomes.

Ray schedules the tasks; Regard only keeps a bounded window of chunks in flight (twice the
cluster's CPUs: a ten-million-image listing never becomes ten million pending tasks) and turns
every way a task can end into an outcome per item. A task whose worker process or node died is
retried by Ray on another node (``max_retries``); the exactly-once indexing in the worker makes
the retry safe. A chunk that runs out of retries fails its items, which the same command run
again retries. Ray is imported here only, when ``--ray`` is given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from regard import __version__
from regard.cluster import worker
from regard.cluster.batch import BatchJob, Tally
from regard.errors import RegardError

log = logging.getLogger("regard.cluster")

TASK_RETRIES = 5  # a chunk survives this many lost workers or nodes
WAIT_SECONDS = 1.0  # how often the driver looks at its lease while chunks run


class ClusterError(RegardError):
    """The Ray cluster cannot run the batch (unreachable, no CPUs, nodes out of step)."""

    code = "ServiceUnavailableException"
    http_status = 503


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str
    cpus: float


class RayCluster:
    """A connection to a running Ray cluster (``ray.init(address=...)``)."""

    def __init__(self, address: str) -> None:
        try:
            import ray
        except ImportError:
            raise ClusterError("Ray is not installed here: pip install 'regard[ray]' on the "
                               "driver and on every node") from None
        self.ray = ray
        _reachable(address)
        try:
            ray.init(address=address, namespace="regard", log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(f"Cannot reach the Ray cluster at {address}: {exc}") from None

    def nodes(self) -> list[Node]:
        """The live nodes that offer CPUs."""
        return [Node(n["NodeID"], n.get("NodeManagerAddress", "?"),
                     float(n.get("Resources", {}).get("CPU", 0)))
                for n in self.ray.nodes() if n.get("Alive") and
                n.get("Resources", {}).get("CPU", 0) > 0]

    def cpus(self) -> int:
        return int(sum(n.cpus for n in self.nodes()))

    def check_nodes(self, job_id: str) -> list[dict[str, Any]]:
        """Run ``worker.check`` once on every node: the same Regard version as the driver and
        the batch's job found in the node's catalog; ``ClusterError`` naming the first node
        that is out of step."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = self.nodes()
        if not nodes:
            raise ClusterError("The Ray cluster has no node with a CPU")
        probe = self.ray.remote(num_cpus=1, max_retries=1)(worker.check)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n.node_id, soft=False)).remote(job_id) for n in nodes]
        answers = []
        for node, ref in zip(nodes, refs):
            try:
                answer = self.ray.get(ref, timeout=300)
            except self.ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
                message = cause.message if isinstance(cause, RegardError) else str(cause)
                raise ClusterError(f"Ray node {node.address}: {message}") from None
            except self.ray.exceptions.RayError as exc:  # lost, out of memory, timed out
                raise ClusterError(f"Ray node {node.address} did not answer the check: "
                                   f"{type(exc).__name__}") from None
            if answer["Version"] != __version__:
                raise ClusterError(f"Ray node {node.address} runs Regard {answer['Version']}, "
                                   f"the driver {__version__}: install one version everywhere")
            answers.append({**answer, "Node": node.address})
        return answers

    def run(self, task: Callable[..., list[dict[str, Any]]], job: BatchJob,
            chunks: Iterable[Sequence[Any]], refs_of: Callable[[Sequence[Any]], list[str]],
            ) -> Iterator[list[dict[str, Any]]]:
        """Run ``task(job_id, chunk)`` for every chunk; yield each chunk's outcomes as they
        come (in no particular order). ``refs_of(chunk)``: the references of its items (to
        fail them by name when the chunk is lost). Stops with ``ClusterError`` when the batch's
        lease is lost (another driver took the batch over)."""
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(task)
        window = max(2, 2 * self.cpus())
        pending: dict[Any, Sequence[Any]] = {}
        source = iter(chunks)

        def send() -> None:
            while len(pending) < window:
                chunk = next(source, None)
                if chunk is None:
                    return
                pending[remote.remote(job.job_id, list(chunk))] = chunk

        send()
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
                if job.lost:
                    raise ClusterError(f"Batch job {job.job_id} was taken over by another "
                                       "driver; this one stops")
                for ref in ready:
                    chunk = pending.pop(ref)
                    yield self._outcomes(ref, chunk, refs_of)
                send()
        finally:
            for ref in pending:  # stopped early: do not leave work running for nobody
                ray.cancel(ref, force=True)

    def _outcomes(self, ref: Any, chunk: Sequence[Any],
                  refs_of: Callable[[Sequence[Any]], list[str]]) -> list[dict[str, Any]]:
        ray = self.ray
        try:
            return list(ray.get(ref))
        except ray.exceptions.RayTaskError as exc:  # the task raised
            cause = getattr(exc, "cause", None)
            if isinstance(cause, worker.BatchGone):
                raise ClusterError(cause.message) from None
            if isinstance(cause, RegardError):
                code, message = cause.code, cause.message
            else:
                log.error("a batch task failed: %s", exc)
                code, message = "InternalServerError", "internal error in a worker"
        except ray.exceptions.RayError as exc:  # its worker or node lost, out of memory, ...
            code = "WorkerLost"
            message = (f"its worker was lost {TASK_RETRIES + 1} times ({type(exc).__name__}); "
                       "run the same command again to retry")
        return [{"Ref": r, "Error": code, "Message": message} for r in refs_of(chunk)]

    def close(self) -> None:
        self.ray.shutdown()


def _reachable(address: str, seconds: float = 10.0) -> None:
    """Fail fast on a cluster address nothing answers at (``ray.init`` would retry for
    minutes): ``HOST:PORT`` or ``ray://HOST:PORT`` must accept a TCP connection."""
    import socket

    if address in ("auto", "local") or "://" in address and not address.startswith("ray://"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"A Ray cluster address is HOST:PORT, ray://HOST:PORT or auto, not "
                           f"{address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as exc:
        raise ClusterError(f"Cannot reach the Ray cluster at {address}: {exc.strerror or exc}"
                           ) from None


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def run_batch(cluster: RayCluster, job: BatchJob, task: Callable[..., list[dict[str, Any]]],
              items: Sequence[Any], *, chunk_size: int,
              refs_of: Callable[[Sequence[Any]], list[str]],
              on_outcome: Callable[[dict[str, Any], Tally], None],
              prepare: Callable[[Sequence[Any]], Sequence[Any]] = list) -> Tally:
    """The batch's items through ``task`` on the cluster, the job row kept up to date; the
    tally. ``prepare`` turns a chunk of items into the task's argument as it is sent (so that
    a listing of millions holds references only); ``on_outcome`` sees each item's outcome (a
    progress bar, a failure line)."""
    tally = Tally(total=len(items))
    chunks = (prepare(chunk) for chunk in chunked(items, chunk_size))
    for outcomes in cluster.run(task, job, chunks, refs_of):
        for outcome in outcomes:
            tally.add(outcome)
            on_outcome(outcome, tally)
        job.report(tally)
    return tally


__all__ = ["ClusterError", "Node", "RayCluster", "TASK_RETRIES", "chunked", "run_batch"]
