"""A real Ray cluster on loopback for the tests: a head node (no CPUs: it only schedules) and
worker nodes of one CPU each, every node its own raylet and worker processes
(``ray.cluster_utils.Cluster``). Nodes take their environment (the catalog's URL, the ledger
key, the object store) from this process when they start, as a real node takes it from its
host; ``kill_node`` stops one the way a lost machine stops: SIGKILL, no goodbye."""

from __future__ import annotations

import os
from typing import Any, Iterator


def unavailable_reason() -> str | None:
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed (pip install 'regard[ray]')"
    return None


class LocalRayCluster:
    def __init__(self, env: dict[str, str], workers: int = 2) -> None:
        from ray.cluster_utils import Cluster

        self._saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the nodes' environment, as on their hosts
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self.cluster = Cluster(initialize_head=True, connect=False, head_node_args={
            "num_cpus": 0, "include_dashboard": False})
        self.workers: list[Any] = [self.add_worker() for _ in range(workers)]

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_worker(self) -> Any:
        node = self.cluster.add_node(num_cpus=1)
        self.cluster.wait_for_nodes()
        return node

    def kill_node(self, node: Any) -> None:
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def shutdown(self) -> None:
        try:
            self.cluster.shutdown()
        finally:
            for key, value in self._saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def serve(env: dict[str, str], workers: int = 2) -> Iterator[LocalRayCluster]:
    cluster = LocalRayCluster(env, workers)
    try:
        yield cluster
    finally:
        cluster.shutdown()
