"""Run an OpenSearch cluster of several nodes with k-NN on loopback, for the tests of the
store on replicated shards: a node killed during an ingest, then started again.

Each node is an OpenSearchNode (the same install, from scripts/setup_opensearch.sh, and the
same root handling: as root the nodes run as the user `opensearch`) with its own folder
(config, data, logs, tmp), its own HTTP and transport ports on 127.0.0.1 and a small heap.
They find each other through `discovery.seed_hosts` (every node's transport address); the
first start elects the cluster manager among all of them
(`cluster.initial_cluster_manager_nodes`). A killed node keeps its folder, and `restart`
runs it again on the same data and ports; `stop` stops every node by pid and deletes the
folders.

The command line (`python3 scripts/serverctl opensearch-cluster ...`) keeps the nodes' pids
and folders in <state-dir>/state.json, and `OpenSearchCluster.from_state` reads it back: a
test process can kill and restart the nodes of a cluster that scripts/test.sh started.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from . import REPO_ROOT, proc
from .opensearch import DEFAULT_HOME, REQUIRED_PLUGIN, OpenSearchNode, http_get_json

DEFAULT_NODES = 3
# Three nodes beside the single test node, Triton and the gateways on a 24 GiB, 2-core machine;
# 512 MiB is far above what the tests' indices need (docs/opensearch.md has the measurements).
DEFAULT_HEAP_MIN = "256m"
DEFAULT_HEAP_MAX = "512m"
DEFAULT_STATE_DIR = os.path.join(REPO_ROOT, ".cache", "opensearch", "cluster-run")
STATUSES = ("red", "yellow", "green")


class OpenSearchCluster:
    """N OpenSearchNodes forming one cluster: start (all at once, then a bounded wait until the
    cluster counts every node and each has k-NN), kill(i) and restart(i) one node on its kept
    data, wait_status, stop. With a state_dir, every change is written to its state.json."""

    def __init__(self, nodes: list[OpenSearchNode], state_dir: str | None = None):
        self.nodes = nodes
        self.state_dir = state_dir

    @classmethod
    def new(cls, count: int = DEFAULT_NODES, home: str = DEFAULT_HOME, *, heap_min: str = DEFAULT_HEAP_MIN,
            heap_max: str = DEFAULT_HEAP_MAX, state_dir: str | None = None) -> "OpenSearchCluster":
        """A cluster not started yet: `count` nodes on free ports, named node-1 ... node-N."""
        if count < 1:
            raise ValueError(f"a cluster needs at least one node, not {count}")
        ports = proc.free_ports(2 * count)
        http_ports, transport_ports = ports[:count], ports[count:]
        names = [f"node-{i + 1}" for i in range(count)]
        membership = {
            # A name of its own: a node of another cluster that happens to hold one of these
            # ports later is refused instead of joined.
            "cluster.name": f"visual-search-cluster-{uuid.uuid4().hex[:8]}",
            "discovery.seed_hosts": [f"127.0.0.1:{port}" for port in transport_ports],
            "cluster.initial_cluster_manager_nodes": names,
        }
        nodes = [OpenSearchNode(home, http_port=http_ports[i], transport_port=transport_ports[i],
                                heap_min=heap_min, heap_max=heap_max, node_name=names[i], cluster=membership)
                 for i in range(count)]
        return cls(nodes, state_dir)

    @classmethod
    def from_state(cls, state_dir: str) -> "OpenSearchCluster":
        """The cluster the state file in state_dir names, its nodes running or killed."""
        state = proc.read_state(state_dir)
        if state is None:
            raise RuntimeError(f"no OpenSearch cluster recorded in {state_dir}")
        nodes = []
        for entry in state["nodes"]:
            node = OpenSearchNode(state["home"], run_dir=entry["run_dir"], heap_min=state["heap_min"],
                                  heap_max=state["heap_max"])
            if not node.kept:
                raise RuntimeError(f"{entry['name']}'s folder {entry['run_dir']} is gone")
            node.pid = entry["pid"]
            nodes.append(node)
        return cls(nodes, state_dir)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def names(self) -> list[str]:
        return [node.node_name for node in self.nodes]

    def index_of(self, name: str) -> int:
        if name not in self.names:
            raise ValueError(f"no node {name!r} in this cluster (nodes: {', '.join(self.names)})")
        return self.names.index(name)

    def running(self) -> list[OpenSearchNode]:
        """The nodes whose JVM is alive (a killed node is not)."""
        return [node for node in self.nodes if node.alive()]

    def _save(self) -> None:
        if self.state_dir is None:
            return
        first = self.nodes[0]
        proc.write_state(self.state_dir, {
            "home": first.home, "heap_min": first.heap_min, "heap_max": first.heap_max,
            "nodes": [{"name": n.node_name, "pid": n.pid, "http_port": n.http_port, "run_dir": n.run_dir}
                      for n in self.nodes],
        })

    def health(self, query: str = "") -> dict | None:
        """`GET _cluster/health` as the first running node that answers it sees the cluster
        (`query`: e.g. `wait_for_status=green&timeout=1s`); None when none answers."""
        for node in self.running():
            health = http_get_json(f"{node.url}/_cluster/health?{query}")
            if health and "status" in health:
                return health
        return None

    def _formed_via(self, node: OpenSearchNode) -> bool:
        """`node` sees every node in the cluster, the cluster yellow or green, k-NN on every node."""
        n = len(self.nodes)
        health = http_get_json(f"{node.url}/_cluster/health?wait_for_nodes={n}&wait_for_status=yellow&timeout=1s")
        if not health or health.get("number_of_nodes") != n or health.get("status") not in ("yellow", "green"):
            return False
        plugins = http_get_json(f"{node.url}/_cat/plugins?format=json") or []
        return {p.get("name") for p in plugins if p.get("component") == REQUIRED_PLUGIN} >= set(self.names)

    def _wait(self, ready, timeout: float, what: str) -> None:
        """Bounded wait until ready(); raises with every node's log tail when a node exits or
        the time runs out."""
        def every_node_alive() -> bool:
            return all(node.alive() for node in self.nodes)

        if proc.wait_until(ready, timeout, poll=0.5, alive=every_node_alive):
            return
        dead = [f"{n.node_name} (exit code {n.returncode()})" for n in self.nodes if not n.alive()]
        reason = f"exited: {', '.join(dead)}" if dead else f"not {what} after {timeout:g}s; health {self.health()}"
        logs = "\n".join(f"--- {n.node_name} {n.log_path}:\n{proc.log_tail(n.log_path, 15)}" for n in self.nodes)
        raise RuntimeError(f"OpenSearch cluster {reason}\n{logs}")

    def wait_formed(self, timeout: float = 180.0) -> None:
        """Bounded wait until some node sees every node in the cluster, with k-NN on each."""
        self._wait(lambda: any(self._formed_via(n) for n in self.nodes), timeout, "formed")

    def start(self, timeout: float = 180.0) -> float:
        """Launches every node at once and waits until the cluster has formed; seconds taken.
        On failure every node is stopped and its folder deleted."""
        started = time.monotonic()
        try:
            for node in self.nodes:
                node.start()
            self._save()
            self.wait_formed(timeout)
        except (RuntimeError, KeyboardInterrupt):
            self.stop()
            raise
        return time.monotonic() - started

    def kill(self, i: int) -> str:
        """SIGKILL node i by pid (a crash: no flush, no goodbye to the cluster), its folder kept."""
        result = self.nodes[i].stop(keep_data=True, kill=True)
        self._save()
        return result

    def restart(self, i: int, timeout: float = 120.0) -> float:
        """Starts killed node i again on its folder (same data, name and ports) and waits until
        it has rejoined; seconds taken. On failure it is killed again, its folder kept."""
        node = self.nodes[i]
        started = time.monotonic()
        node.start()
        self._save()
        try:
            self._wait(lambda: self._formed_via(node), timeout, f"joined by {node.node_name}")
        except (RuntimeError, KeyboardInterrupt):
            self.kill(i)
            raise
        return time.monotonic() - started

    def wait_status(self, status: str, timeout: float = 120.0) -> float:
        """Bounded wait until the cluster's health is exactly `status` (e.g. yellow after a kill,
        green once the replicas are recovered); seconds taken."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        started = time.monotonic()
        last = None

        def reached() -> bool:
            nonlocal last
            last = self.health(f"wait_for_status={status}&timeout=1s")
            return last is not None and last["status"] == status

        if not proc.wait_until(reached, timeout, poll=0.5):
            raise RuntimeError(f"OpenSearch cluster not {status} after {timeout:g}s; health {last}")
        return time.monotonic() - started

    def stop(self, timeout: float = 30.0) -> list[str]:
        """Stops every node by pid (SIGTERM, bounded wait, SIGKILL), all at once, deletes their
        folders and the state file; one result a node."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            results = list(pool.map(lambda node: node.stop(timeout), self.nodes))
        if self.state_dir is not None:
            proc.remove_state(self.state_dir)
        return results


# ---------------------------------------------------------------------------------------
# Command line: opensearch-cluster start [NAME] | kill NAME | stop | status | urls

def _recorded(state_dir: str) -> OpenSearchCluster | None:
    try:
        return OpenSearchCluster.from_state(state_dir)
    except RuntimeError as e:
        print(f"opensearch-cluster: {e}", file=sys.stderr)
        return None


def _cmd_start(a: argparse.Namespace) -> int:
    if a.name:
        return _start_node(a)
    if proc.read_state(a.state_dir) is not None:
        print(f"opensearch-cluster: a cluster is recorded in {a.state_dir}; `stop` it first", file=sys.stderr)
        return 1
    cluster = OpenSearchCluster.new(a.nodes, a.home, heap_min=a.heap_min, heap_max=a.heap_max,
                                    state_dir=a.state_dir)
    try:
        took = cluster.start(a.timeout)
    except (RuntimeError, KeyboardInterrupt) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    progress = sys.stderr if a.print_urls else sys.stdout
    print(f"opensearch cluster of {len(cluster.nodes)} nodes ready in {took:.1f}s with {REQUIRED_PLUGIN}:",
          file=progress)
    for node in cluster.nodes:
        print(f"  {node.node_name} pid {node.pid} {node.url} transport 127.0.0.1:{node.transport_port} "
              f"log {node.log_path}", file=progress)
    if a.print_urls:
        print(",".join(cluster.urls))
    return 0


def _start_node(a: argparse.Namespace) -> int:
    cluster = _recorded(a.state_dir)
    if cluster is None:
        return 1
    try:
        i = cluster.index_of(a.name)
        if cluster.nodes[i].alive():
            print(f"opensearch-cluster: {a.name} is running (pid {cluster.nodes[i].pid})", file=sys.stderr)
            return 1
        took = cluster.restart(i, a.timeout)
    except (ValueError, RuntimeError, KeyboardInterrupt) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{a.name} pid {cluster.nodes[i].pid} rejoined in {took:.1f}s on its kept data: {cluster.nodes[i].url}")
    return 0


def _cmd_kill(a: argparse.Namespace) -> int:
    cluster = _recorded(a.state_dir)
    if cluster is None:
        return 1
    try:
        i = cluster.index_of(a.name)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{a.name} pid {cluster.nodes[i].pid}: {cluster.kill(i)}; data kept in {cluster.nodes[i].run_dir}")
    return 0


def _cmd_stop(a: argparse.Namespace) -> int:
    if proc.read_state(a.state_dir) is None:
        print("opensearch-cluster: no state file, nothing to stop")
        return 0
    cluster = _recorded(a.state_dir)
    if cluster is None:
        return 1
    for node, result in zip(cluster.nodes, cluster.stop()):
        print(f"{node.node_name} pid {node.pid}: {result}")
    return 0


def _cmd_status(a: argparse.Namespace) -> int:
    if proc.read_state(a.state_dir) is None:
        print("opensearch-cluster: not running")
        return 3
    cluster = _recorded(a.state_dir)
    if cluster is None:
        return 1
    for node in cluster.nodes:
        print(f"{node.node_name} pid {node.pid} {'running' if node.alive() else 'killed, data kept'}; "
              f"{node.url}; log {node.log_path}")
    health = cluster.health()
    if health is None:
        print("cluster: no node answers")
        return 1
    print(f"cluster {health['cluster_name']}: {health['status']}, {health['number_of_nodes']} of "
          f"{len(cluster.nodes)} nodes, {health['unassigned_shards']} unassigned shards")
    return 0 if health["number_of_nodes"] == len(cluster.nodes) and health["status"] != "red" else 1


def _cmd_urls(a: argparse.Namespace) -> int:
    if proc.read_state(a.state_dir) is None:
        print("opensearch-cluster: not running", file=sys.stderr)
        return 3
    cluster = _recorded(a.state_dir)
    if cluster is None:
        return 1
    print(",".join(cluster.urls))
    return 0


def add_commands(sub) -> None:
    """`opensearch-cluster <command>`: one sub-parser per command, bound to its function."""
    table = [
        ("start", _cmd_start, "start every node and wait until the cluster has formed; with NAME, start "
                              "that killed node again on its kept data and ports"),
        ("kill", _cmd_kill, "SIGKILL one node by pid, keeping its data"),
        ("stop", _cmd_stop, "stop every node by pid (SIGTERM, bounded wait, SIGKILL) and delete the folders"),
        ("status", _cmd_status, "each node's pid, URL and log, and the cluster's health"),
        ("urls", _cmd_urls, "print the nodes' HTTP URLs, comma-separated"),
    ]
    parsers = proc.command_parsers(sub, "opensearch-cluster", "an OpenSearch cluster of several nodes on loopback",
                                   __doc__.splitlines()[0], table, DEFAULT_STATE_DIR)
    start = parsers["start"]
    start.add_argument("name", nargs="?", help="a killed node (e.g. node-2) to start again")
    start.add_argument("--nodes", type=int, default=DEFAULT_NODES, help=f"default {DEFAULT_NODES}")
    start.add_argument("--home", default=DEFAULT_HOME, help="the install (scripts/setup_opensearch.sh)")
    start.add_argument("--heap-min", default=DEFAULT_HEAP_MIN, help=f"per node, default {DEFAULT_HEAP_MIN}")
    start.add_argument("--heap-max", default=DEFAULT_HEAP_MAX, help=f"per node, default {DEFAULT_HEAP_MAX}")
    start.add_argument("--timeout", type=float, default=180.0, help="seconds (default 180)")
    start.add_argument("--print-urls", action="store_true",
                       help="print only the comma-separated URLs on stdout (progress goes to stderr), for $(...)")
    parsers["kill"].add_argument("name", help="e.g. node-2")
