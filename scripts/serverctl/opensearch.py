"""Run a single-node OpenSearch with k-NN (installed by scripts/setup_opensearch.sh) on loopback.

One implementation shared by scripts/test.sh and scripts/run.sh (`opensearch start
--print-url`, `stop`), scripts/setup_opensearch.sh (`home`, `java-home`), the pytest
fixtures (OpenSearchNode) and a developer's shell (start/stop/restart/status/url).
OpenSearchNode also runs each node of a cluster, given that cluster's settings by
serverctl/opensearch_cluster.py. Stdlib only, so any python3 can drive it.

OpenSearch refuses to run as root: as root the node runs as the unprivileged user
`opensearch` (created if missing); as any other user, as that user. Each node gets its own
temporary folder (config, data, logs, tmp) owned by that user, removed when it is stopped,
unless it is stopped with keep_data (`stop --keep-data`): then `start` runs the same node
again, on the same folder, data and ports.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

from . import REPO_ROOT, proc

OPENSEARCH_VERSION = os.environ.get("OPENSEARCH_VERSION", "2.19.1")
RUN_USER = "opensearch"
# As root the node runs as RUN_USER, which cannot enter a checkout in a private home (a clone
# in /root or under `mktemp -d`): then the install lives in a root-owned folder every user can
# read. Otherwise the node runs as the caller and the install stays in the checkout's cache.
SYSTEM_INSTALL_ROOT = "/var/cache/visual-search/opensearch"


def install_root() -> str:
    """The folder setup_opensearch.sh assembles the node in (OPENSEARCH_INSTALL_ROOT overrides)."""
    if os.environ.get("OPENSEARCH_INSTALL_ROOT"):
        return os.path.abspath(os.environ["OPENSEARCH_INSTALL_ROOT"])
    if os.geteuid() == 0:
        return SYSTEM_INSTALL_ROOT
    return os.path.join(REPO_ROOT, ".cache", "opensearch")


DEFAULT_HOME = os.path.join(install_root(), f"opensearch-{OPENSEARCH_VERSION}")
DEFAULT_STATE_DIR = os.path.join(REPO_ROOT, ".cache", "opensearch", "run")
REQUIRED_PLUGIN = "opensearch-knn"
# The Java main class, as it appears in the node's command line (to recognise our process).
MAIN_CLASS = b"org.opensearch.bootstrap.OpenSearch"


def java_home() -> str:
    """OPENSEARCH_JAVA_HOME, else the machine's Java 17, else JAVA_HOME.

    Java 17 is preferred over a generic JAVA_HOME: OpenSearch 2.19 needs the security
    manager, which Java 24+ (e.g. a Temurin 25 beside it) no longer has.
    """
    candidates = [os.environ.get("OPENSEARCH_JAVA_HOME")]
    candidates += sorted(glob.glob("/usr/lib/jvm/java-17-openjdk*")) + sorted(glob.glob("/usr/lib/jvm/temurin-17*"))
    candidates.append(os.environ.get("JAVA_HOME"))
    for home in candidates:
        if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
            return home
    raise RuntimeError("no Java 17 found: install openjdk-17 or set OPENSEARCH_JAVA_HOME")


def http_get_json(url: str, timeout: float = 5.0):
    """Parsed JSON body of a GET (error statuses included), or None when the node does not
    answer (yet) or the body is not JSON."""
    response = proc.http_get(url, timeout)
    if response is None:
        return None
    try:
        return json.loads(response[1])
    except ValueError:
        return None


def ensure_run_user() -> pwd.struct_passwd | None:
    """The unprivileged account the node runs as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(RUN_USER)
    except KeyError:
        pass
    result = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                             "--shell", "/usr/sbin/nologin", "--user-group", RUN_USER],
                            capture_output=True, text=True)
    try:
        return pwd.getpwnam(RUN_USER)
    except KeyError:  # neither we nor a concurrent start created it
        raise RuntimeError(f"could not create user {RUN_USER}: {result.stderr.strip()}") from None


def _is_our_node(pid: int, conf_dir: str) -> bool:
    """The pid is an OpenSearch JVM reading its config from conf_dir (so a node we started)."""
    args = proc.cmdline(pid)
    return MAIN_CLASS in args and f"-Dopensearch.path.conf={conf_dir}".encode() in args


def stop_pid(pid: int, conf_dir: str, timeout: float = 30.0, kill: bool = False, own_child: bool = False) -> str:
    """SIGTERM, bounded wait, then SIGKILL; with kill=True SIGKILL at once (a crash: no
    flush, the next start replays the translog). `own_child`: the pid is this process's
    unreaped child, so it cannot have been reused, even while it is still the launcher
    script rather than the JVM (a start that failed in its first seconds)."""
    if not proc.alive(pid):
        return "not running"
    if not own_child and not _is_our_node(pid, conf_dir):
        return f"gone (pid {pid} is now another process, left alone)"
    if kill:
        return proc.kill(pid, timeout=10)
    return proc.terminate(pid, timeout)


def _read_settings(conf_dir: str) -> dict | None:
    """The opensearch.yml this module wrote (one `key: <json>` a line), or None if there is none."""
    try:
        with open(os.path.join(conf_dir, "opensearch.yml")) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    settings = {}
    for line in lines:
        key, _, value = line.partition(": ")
        settings[key] = json.loads(value)
    return settings


class OpenSearchNode(proc.ServerProcess):
    """One OpenSearch process: start, wait until ready (k-NN loaded), stop; port free unless given.

    `stop(keep_data=True)` leaves the node's folder in place and `start()` then runs the same
    node again (same data, config and ports); so does a `run_dir` that already holds a config
    this class wrote."""

    name = "OpenSearch"

    def __init__(self, home: str = DEFAULT_HOME, *, http_port: int | None = None,
                 transport_port: int | None = None, heap_min: str = "512m", heap_max: str = "1g",
                 run_dir: str | None = None, node_name: str = "node-1", cluster: dict | None = None):
        """`cluster`: the settings that make the node one of a cluster (cluster.name,
        discovery.seed_hosts, cluster.initial_cluster_manager_nodes; see OpenSearchCluster);
        None: a node on its own (discovery.type single-node)."""
        super().__init__()
        self.home = os.path.abspath(home)
        existing = _read_settings(os.path.join(run_dir, "config")) if run_dir else None
        if existing is not None:  # a kept node: its name and ports are in its config
            self.http_port = existing["http.port"]
            self.transport_port = existing["transport.port"]
            self.node_name = existing["node.name"]
            if http_port and http_port != self.http_port:
                raise ValueError(f"{run_dir} is a node on HTTP port {self.http_port}, not {http_port}")
        else:
            self.http_port = http_port or proc.free_port()
            self.transport_port = transport_port or proc.free_port()
            self.node_name = node_name
        self.cluster = cluster
        self.heap_min = heap_min
        self.heap_max = heap_max
        self.run_dir = run_dir
        self.started_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def conf_dir(self) -> str:
        return os.path.join(self.run_dir, "config")

    @property
    def log_path(self) -> str:
        """Console output: the node's log lines plus anything the JVM prints before logging starts."""
        return os.path.join(self.run_dir, "logs", "console.log")

    def alive(self) -> bool:
        # A pid read from a state file may belong to another process by now: only our JVM counts.
        if self.proc is None and self.pid is not None:
            return proc.alive(self.pid) and _is_our_node(self.pid, self.conf_dir)
        return super().alive()

    def _write_config(self, user: pwd.struct_passwd | None) -> None:
        for sub in ("config", "data", "logs", "tmp"):
            os.makedirs(os.path.join(self.run_dir, sub), exist_ok=True)
        src_conf = os.path.join(self.home, "config")
        shutil.copy(os.path.join(src_conf, "log4j2.properties"), self.conf_dir)
        shutil.copytree(os.path.join(src_conf, "jvm.options.d"), os.path.join(self.conf_dir, "jvm.options.d"))
        # The stock jvm.options writes the GC log, heap dumps and crash files relative to the
        # working directory (the install, read-only for the node's user): point them here.
        with open(os.path.join(src_conf, "jvm.options")) as f:
            jvm_options = f.read()
        logs_dir = os.path.join(self.run_dir, "logs")
        jvm_options = (jvm_options.replace("file=logs/", f"file={logs_dir}/")
                       .replace("ErrorFile=logs/", f"ErrorFile={logs_dir}/")
                       .replace("HeapDumpPath=data", f"HeapDumpPath={self.run_dir}/data"))
        with open(os.path.join(self.conf_dir, "jvm.options"), "w") as f:
            f.write(jvm_options)
        settings = {
            "cluster.name": "visual-search-test",
            "node.name": self.node_name,
            "path.data": os.path.join(self.run_dir, "data"),
            "path.logs": logs_dir,
            # With loopback binding the bootstrap checks (vm.max_map_count, file descriptors)
            # only warn, for a cluster's nodes too.
            "network.host": "127.0.0.1",
            "http.port": self.http_port,
            "transport.port": self.transport_port,
            # A shared disk filling up must not turn test indices read-only.
            "cluster.routing.allocation.disk.threshold_enabled": False,
        }
        # On its own: no cluster forming. In a cluster: its name and how its nodes find each other.
        settings.update(self.cluster or {"discovery.type": "single-node"})
        with open(os.path.join(self.conf_dir, "opensearch.yml"), "w") as f:
            for key, value in settings.items():
                f.write(f"{key}: {json.dumps(value)}\n")
        if user is not None:
            for root, dirs, files in os.walk(self.run_dir):
                for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                    os.chown(name, user.pw_uid, user.pw_gid)

    @property
    def kept(self) -> bool:
        """The node's folder holds its config (and data) from an earlier start."""
        return self.run_dir is not None and _read_settings(self.conf_dir) is not None

    def start(self) -> "OpenSearchNode":
        """Launches the JVM and returns at once (see wait_ready). A kept node (stopped with
        keep_data) starts again on its folder as it is: same data, config and ports."""
        launcher = os.path.join(self.home, "bin", "opensearch")
        if not os.path.exists(launcher):
            raise RuntimeError(f"no OpenSearch at {self.home}: run scripts/setup_opensearch.sh first")
        if self.pid is not None and self.alive() and _is_our_node(self.pid, self.conf_dir):
            raise RuntimeError(f"OpenSearch pid {self.pid} is still running")
        user = ensure_run_user()
        if self.run_dir is None:
            self.run_dir = tempfile.mkdtemp(prefix=f"opensearch-{self.node_name}-")
        if not self.kept:
            self._write_config(user)
        env = {k: v for k, v in os.environ.items() if k not in ("JAVA_TOOL_OPTIONS", "JAVA_OPTS")}
        env.update({
            "JAVA_HOME": java_home(),
            "OPENSEARCH_PATH_CONF": self.conf_dir,
            "OPENSEARCH_TMPDIR": os.path.join(self.run_dir, "tmp"),
            "OPENSEARCH_JAVA_OPTS": f"-Xms{self.heap_min} -Xmx{self.heap_max}",
            "HOME": self.run_dir,
        })
        env.pop("OPENSEARCH_JAVA_HOME", None)
        # The uid switch happens in the child before exec (what runuser does, minus the
        # extra runuser process): bin/opensearch execs java, so self.pid is the JVM itself
        # and stop() signals it directly. The launcher runs bin/opensearch-keystore by a
        # relative path, hence cwd = the install.
        as_user = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self._spawn([launcher], env=env, cwd=self.home, append_log=True, **as_user)
        self.started_at = time.monotonic()
        return self

    def ready(self) -> bool:
        health = http_get_json(f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=1s")
        if not health or health.get("status") not in ("yellow", "green"):
            return False
        plugins = http_get_json(f"{self.url}/_cat/plugins?format=json") or []
        return any(p.get("component") == REQUIRED_PLUGIN for p in plugins)

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait until the cluster is yellow/green and k-NN is loaded; seconds since start()."""
        if self._poll_until_ready(self.ready, timeout, poll=0.5):
            return time.monotonic() - self.started_at
        plugins = http_get_json(f"{self.url}/_cat/plugins?format=json")
        raise RuntimeError(f"OpenSearch not ready after {timeout}s (plugins: {plugins}); {self.log_note()}")

    def stop(self, timeout: float = 30.0, *, keep_data: bool = False, kill: bool = False) -> str:
        """Stop the JVM by pid (SIGTERM, bounded wait, SIGKILL; kill=True: SIGKILL at once)
        and remove the node's folder, or with keep_data leave it for the next start()."""
        if self.pid is None:
            if self.run_dir is not None and not keep_data:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            return "not started"
        own_child = self.proc is not None and self.proc.poll() is None
        result = stop_pid(self.pid, self.conf_dir, timeout, kill=kill, own_child=own_child)
        self._reap()
        if not keep_data:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return result


# ---------------------------------------------------------------------------------------
# Command line: opensearch java-home | home | start | stop | restart | status | url

def _node_from_state(state: dict) -> OpenSearchNode:
    node = OpenSearchNode(state["home"], http_port=state["http_port"], run_dir=state["run_dir"],
                          heap_min=state.get("heap_min", "512m"), heap_max=state.get("heap_max", "1g"))
    node.pid = state["pid"]
    return node


def _write_state(state_dir: str, node: OpenSearchNode, kept: bool = False) -> None:
    proc.write_state(state_dir, {"pid": node.pid, "http_port": node.http_port, "run_dir": node.run_dir,
                                 "home": node.home, "heap_min": node.heap_min, "heap_max": node.heap_max,
                                 "kept": kept})


class _Recorded:
    """The node the state file in state_dir names: running, or stopped with its data kept."""

    def __init__(self, state_dir: str):
        state = proc.read_state(state_dir)
        self.node = _node_from_state(state) if state else None
        node = self.node
        self.running = node is not None and proc.alive(node.pid) and _is_our_node(node.pid, node.conf_dir)
        self.kept = node is not None and not self.running and bool(state.get("kept")) and node.kept


def _stop(node: OpenSearchNode, state_dir: str, keep_data: bool, kill: bool) -> None:
    result = node.stop(keep_data=keep_data, kill=kill)
    if keep_data:
        _write_state(state_dir, node, kept=True)
        print(f"opensearch pid {node.pid}: {result}; data kept in {node.run_dir} (start runs it again on {node.url})")
    else:
        proc.remove_state(state_dir)
        print(f"opensearch pid {node.pid}: {result}")


def _start(node: OpenSearchNode, state_dir: str, timeout: float, print_url: bool) -> int:
    resumed = node.kept
    try:
        node.start()
        _write_state(state_dir, node)
        took = node.wait_ready(timeout)
    except (RuntimeError, KeyboardInterrupt) as e:
        # A node that was kept keeps its data (and its state file, marked kept) on failure.
        node.stop(keep_data=resumed)
        if resumed:
            _write_state(state_dir, node, kept=True)
        else:
            proc.remove_state(state_dir)
        print(f"error: {e}", file=sys.stderr)
        return 1
    progress = sys.stderr if print_url else sys.stdout
    print(f"opensearch pid {node.pid} {'restarted on its kept data' if resumed else 'ready'} in {took:.1f}s "
          f"with {REQUIRED_PLUGIN}: {node.url}; log {node.log_path}", file=progress)
    if print_url:
        print(node.url)
    return 0


def _cmd_java_home(a: argparse.Namespace) -> int:
    try:
        print(java_home())
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_home(a: argparse.Namespace) -> int:
    print(DEFAULT_HOME)
    return 0


def _cmd_url(a: argparse.Namespace) -> int:
    r = _Recorded(a.state_dir)
    if not r.running:
        print("opensearch: not running", file=sys.stderr)
        return 3
    print(r.node.url)
    return 0


def _cmd_status(a: argparse.Namespace) -> int:
    r = _Recorded(a.state_dir)
    if not r.running:
        print(f"opensearch: not running{f'; data kept in {r.node.run_dir} for {r.node.url}' if r.kept else ''}")
        return 3
    ready = r.node.ready()
    print(f"opensearch pid {r.node.pid} {'ready' if ready else 'NOT ready'}; {r.node.url}; log {r.node.log_path}")
    return 0 if ready else 1


def _cmd_stop(a: argparse.Namespace) -> int:
    r = _Recorded(a.state_dir)
    if r.node is None:
        print("opensearch: no state file, nothing to stop")
        return 0
    _stop(r.node, a.state_dir, a.keep_data, a.kill)
    return 0


def _cmd_restart(a: argparse.Namespace) -> int:
    r = _Recorded(a.state_dir)
    if not (r.running or r.kept):
        print("opensearch: no running or kept node to restart (use start)", file=sys.stderr)
        return 1
    if r.running:
        _stop(r.node, a.state_dir, keep_data=True, kill=a.kill)
    return _start(r.node, a.state_dir, a.timeout, a.print_url)


def _cmd_start(a: argparse.Namespace) -> int:
    r = _Recorded(a.state_dir)
    if r.running:
        print(f"opensearch already running (pid {r.node.pid}, {r.node.url}); stop it first", file=sys.stderr)
        return 1
    if r.kept:
        if a.http_port and a.http_port != r.node.http_port:
            print(f"error: the kept node in {r.node.run_dir} listens on {r.node.http_port}, not {a.http_port}; "
                  f"`stop` deletes it", file=sys.stderr)
            return 1
        return _start(r.node, a.state_dir, a.timeout, a.print_url)
    node = OpenSearchNode(a.home, http_port=a.http_port or None, heap_min=a.heap_min, heap_max=a.heap_max)
    return _start(node, a.state_dir, a.timeout, a.print_url)


def add_commands(sub) -> None:
    """`opensearch <command>`: one sub-parser per command, bound to its function."""
    table = [
        ("java-home", _cmd_java_home, "print the Java home the node runs with"),
        ("home", _cmd_home, "print where scripts/setup_opensearch.sh installs the node"),
        ("start", _cmd_start, "start in the background and wait until ready; a node stopped with "
                              "--keep-data starts again on its data and port"),
        ("stop", _cmd_stop, "stop by pid (SIGTERM, bounded wait, SIGKILL) and delete the node's folder"),
        ("restart", _cmd_restart, "stop keeping the data, then start the same node again"),
        ("status", _cmd_status, "pid, readiness, URL and log of the node `start` started"),
        ("url", _cmd_url, "print the running node's URL"),
    ]
    parsers = proc.command_parsers(sub, "opensearch", "a single-node OpenSearch on loopback",
                                   __doc__.splitlines()[0], table, DEFAULT_STATE_DIR)
    start = parsers["start"]
    start.add_argument("--home", default=DEFAULT_HOME, help="the install (scripts/setup_opensearch.sh)")
    start.add_argument("--http-port", type=int, default=int(os.environ.get("OPENSEARCH_HTTP_PORT", 0)),
                       help="default: a free port")
    start.add_argument("--heap-min", default="512m")
    start.add_argument("--heap-max", default="1g")
    for name in ("stop", "restart"):
        parsers[name].add_argument("--kill", action="store_true",
                                   help="SIGKILL at once (a crash) instead of SIGTERM")
    parsers["stop"].add_argument("--keep-data", action="store_true",
                                 help="keep the node's folder (data, config, port): `start` runs it again")
    for name in ("start", "restart"):
        parsers[name].add_argument("--timeout", type=float, default=120.0)
        parsers[name].add_argument("--print-url", action="store_true",
                                   help="print only the URL on stdout (progress goes to stderr), for $(...)")
