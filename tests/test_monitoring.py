"""monitoring/ against a real Prometheus scraping the session's Triton and a gateway of its own.

Prometheus and promtool are Debian's (scripts/setup_prometheus.sh). promtool checks the
production config and the rules, and runs the rules' unit tests (monitoring/tests/), which
hold every alert's threshold arithmetic against made-up series. Then a Prometheus on a free
loopback port, with a temporary storage folder and a 1 s scrape and rule interval, scrapes
Triton's metrics port and the gateway's ops address, through a copy of
monitoring/prometheus.yml whose targets are those loopback ports (same jobs, same rules).
The gateway has two Triton endpoints, the live one and a port that refuses connections, and
one search slot, so a burst of searches is shed with 503s. A short load goes through it, in
two rounds with a scrape between: photos ingested (one twice, one not a photo), text
searches (one repeated, so the cache hits), image searches, a rerank call, a bad request.

Then every panel query of monitoring/grafana/dashboards/*.json and every alert expression of
monitoring/rules/*.yml goes through Prometheus's HTTP API and must return at least one
finite value. An alert expression is `<value> <comparison> <threshold>`; its value side is
evaluated, since the comparison rightly returns nothing while all is well. The only
exemption is GPU_ONLY: expressions over nv_gpu_* metrics, which Triton exports only on a
GPU; Prometheus must accept them (a valid query), and nothing else may be exempt.
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
import requests
import yaml

from serverctl.proc import ServerProcess, free_port, terminate, wait_until
from test_gateway import Gateway, _load_models, photo_paths, read_bytes, sha256

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MONITORING = os.path.join(REPO_ROOT, "monitoring")
RULE_FILES = sorted(glob.glob(os.path.join(MONITORING, "rules", "*.yml")))
DASHBOARDS = sorted(glob.glob(os.path.join(MONITORING, "grafana", "dashboards", "*.json")))
LOG_DIR = os.path.join(REPO_ROOT, ".cache", "monitoring", "test-logs")
SCRAPE_S = 1

# Expressions that can only return data on a GPU machine: Triton exports nv_gpu_* only when it
# GPU's metrics. Each is still sent to Prometheus, which must accept it. Written with single
# spaces: expressions are compared with their whitespace collapsed (`normalized`).
GPU_ONLY = {
    'nv_gpu_memory_used_bytes{job="triton"} / nv_gpu_memory_total_bytes{job="triton"}',  # triton.json
    'nv_gpu_utilization{job="triton"}',  # triton.json
    # TritonGpuMemoryHigh (rules/triton.yml), its value side
    'max by (instance, gpu_uuid) (nv_gpu_memory_used_bytes{job="triton"} / nv_gpu_memory_total_bytes{job="triton"})',
}

# `<value> <op> <number>` at the end of an alert expression. Comparisons bind less tightly
# than arithmetic, so what precedes the last one is the whole value side, unless a set
# operator (and, or, unless; looser still) is at the top level: left_side refuses those.
ALERT_FORM = re.compile(r"^(?P<value>.+?)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<threshold>-?[0-9.]+(?:e-?[0-9]+)?)\s*$",
                        re.DOTALL)


def normalized(expr: str) -> str:
    return " ".join(expr.split())


def left_side(expr: str) -> str:
    m = ALERT_FORM.match(expr.strip())
    assert m, f"alert expression is not `<value> <comparison> <number>`:\n{expr}"
    value = m["value"]
    assert not re.search(r"\b(and|or|unless)\b", value), f"a set operator in an alert's value side:\n{expr}"
    return value


def alert_rules() -> list[dict]:
    rules = []
    for path in RULE_FILES:
        with open(path) as f:
            for group in yaml.safe_load(f)["groups"]:
                rules += [dict(rule, file=os.path.basename(path)) for rule in group["rules"] if "alert" in rule]
    return rules


def dashboards() -> dict[str, dict]:
    out = {}
    for path in DASHBOARDS:
        with open(path) as f:
            out[os.path.basename(path)] = json.load(f)
    return out


def panel_queries() -> list[tuple[str, str]]:
    """(where, expr) for every target of every panel."""
    queries = []
    for name, board in dashboards().items():
        for panel in board["panels"]:
            targets = panel.get("targets") or []
            assert targets, f"{name}: panel {panel['title']!r} has no query"
            queries += [(f"{name}: {panel['title']} [{t['refId']}]", t["expr"]) for t in targets]
    return queries


def variable_queries() -> list[tuple[str, str, str, str]]:
    """(dashboard, variable, metric selector, label) of every label_values(...) variable."""
    out = []
    for name, board in dashboards().items():
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
            assert m, f"{name}: variable {var['name']} is not label_values(selector, label)"
            out.append((name, var["name"], m[1], m[2]))
    return out


def substitute(expr: str, window: str) -> str:
    """Grafana's variables as the dashboards are opened with them: every value (the variables'
    allValue, .*) and a rate window that covers the whole test."""
    names = {v for _, v, _, _ in variable_queries()}
    for name in names:
        expr = expr.replace(f"${name}", ".*")
    expr = expr.replace("$__rate_interval", window)
    assert "$" not in expr, f"an unknown variable is left in:\n{expr}"
    return expr


def test_promtool_checks_config_and_rules():
    promtool = _binary("promtool")
    r = subprocess.run([promtool, "check", "config", os.path.join(MONITORING, "prometheus.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in r.stdout + r.stderr, r.stdout + r.stderr
    r = subprocess.run([promtool, "check", "rules", *RULE_FILES], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(RULE_FILES) >= 2 and len(DASHBOARDS) >= 2


def test_alert_rule_unit_tests_pass_and_cover_every_alert():
    """monitoring/tests/*.yml: promtool feeds each alert made-up series above and below its
    threshold (docs/monitoring.md); every alert must fire in at least one of them."""
    unit_tests = sorted(glob.glob(os.path.join(MONITORING, "tests", "*.yml")))
    r = subprocess.run([_binary("promtool"), "test", "rules", *unit_tests], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    fired = set()
    for path in unit_tests:
        with open(path) as f:
            for case in yaml.safe_load(f)["tests"]:
                fired |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert fired == {rule["alert"] for rule in alert_rules()}


def test_gpu_exemptions_are_exactly_the_gpu_expressions():
    """GPU_ONLY lists every expression over nv_gpu_* metrics and nothing else."""
    gpu = re.compile(r"\bnv_gpu_\w+")
    metric = re.compile(r"\b(nv_\w+|gateway_\w+|up)\b")
    values = [e for _, e in panel_queries()] + [left_side(r["expr"]) for r in alert_rules()]
    assert {normalized(e) for e in values if gpu.search(e)} == GPU_ONLY
    for expr in GPU_ONLY:
        assert all(name.startswith("nv_gpu_") for name in metric.findall(expr)), expr


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"!!! monitoring test NOT RUN: no {name} (scripts/setup_prometheus.sh installs it) !!!")
    return path


class PrometheusServer(ServerProcess):
    name = "prometheus"

    def __init__(self, config_path: str, storage: str, log_path: str):
        super().__init__()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.cmd = [_binary("prometheus"), f"--config.file={config_path}", f"--storage.tsdb.path={storage}",
                    f"--web.listen-address=127.0.0.1:{self.port}"]

    def start(self, timeout: float = 60.0) -> None:
        self._spawn(self.cmd, env=dict(os.environ), cwd=os.path.dirname(self.log_path))
        if not self._poll_until_ready(lambda: _answers(f"{self.url}/-/ready"), timeout, poll=0.2):
            raise RuntimeError(f"prometheus not ready after {timeout}s; {self.log_note()}")

    def stop(self) -> None:
        if self.alive():
            terminate(self.pid, timeout=20)
        self._reap()

    def api(self, path: str, **params):
        r = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = r.json()
        assert body.get("status") == "success", f"{path} {params}: {r.status_code} {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def loopback_config(triton_metrics: str, gateway_metrics: str, rules_dir: str) -> dict:
    """monitoring/prometheus.yml with the test's loopback targets, a 1 s interval, and the
    rule files by absolute path."""
    with open(os.path.join(MONITORING, "prometheus.yml")) as f:
        config = yaml.safe_load(f)
    targets = {"triton": triton_metrics, "gateway": gateway_metrics}
    assert {job["job_name"] for job in config["scrape_configs"]} == set(targets)
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    config["global"].update(scrape_interval=f"{SCRAPE_S}s", evaluation_interval=f"{SCRAPE_S}s")
    config["rule_files"] = [os.path.join(rules_dir, os.path.basename(p)) for p in config["rule_files"]]
    return config


@pytest.fixture(scope="module")
def stack(triton, tmp_path_factory):
    """Prometheus scraping Triton and a gateway that served the load; yields (prometheus,
    gateway, dead endpoint, stored photo count, start time)."""
    if len(photo_paths()) < 8:
        pytest.skip("!!! monitoring test NOT RUN: fewer than 8 photos in ../shared/data !!!")
    _load_models(triton)
    tmp = tmp_path_factory.mktemp("monitoring")
    os.makedirs(LOG_DIR, exist_ok=True)
    # A Triton endpoint that refuses connections: bound, never listening, held for the
    # module's life so that no other server can be given the port.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_address = f"127.0.0.1:{dead.getsockname()[1]}"
    gateway_config = tmp / "gateway.toml"
    # A generous probe deadline: the live endpoint must not read 0 because a probe was slow
    # on a busy CI machine (the dead one is refused at once).
    gateway_config.write_text("[server]\nmax_concurrent_search = 1\n\n[triton]\nprobe_timeout_ms = 5000\n")
    ops_port = free_port()
    gw = Gateway(str(tmp / "data"), [triton.grpc_address, dead_address],
                 extra_args=("--config", str(gateway_config), "--ops-listen", f"127.0.0.1:{ops_port}"))
    config_path = tmp / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(loopback_config(f"127.0.0.1:{triton.metrics_port}", f"127.0.0.1:{ops_port}",
                                                      os.path.join(MONITORING, "rules"))))
    r = subprocess.run([_binary("promtool"), "check", "config", str(config_path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    prometheus = PrometheusServer(str(config_path), str(tmp / "tsdb"),
                                  os.path.join(LOG_DIR, f"prometheus-{os.getpid()}.log"))
    try:
        gw.start()
        started = time.time()
        prometheus.start()
        # Both targets scraped once before the load, so every counter's rise is in the data.
        assert wait_until(lambda: _targets_scraped_after(prometheus, started), 30, 0.5, prometheus.alive), \
            f"targets not scraped within 30 s: {prometheus.api('targets')['activeTargets']}"
        stored = _drive_load(gw, prometheus)
        load_done = time.time()
        assert wait_until(lambda: _targets_scraped_after(prometheus, load_done + SCRAPE_S), 30, 0.5,
                          prometheus.alive), "targets not scraped after the load within 30 s"
        yield prometheus, gw, dead_address, stored, started
    finally:
        prometheus.stop()
        gw.stop()
        dead.close()


def _targets_scraped_after(prometheus: PrometheusServer, since: float) -> bool:
    targets = prometheus.api("targets")["activeTargets"]
    scraped = {t["labels"]["job"] for t in targets
               if t["health"] == "up" and _epoch(t["lastScrape"]) > since}
    return scraped == {"triton", "gateway"}


def _epoch(rfc3339: str) -> float:
    # Prometheus writes nanoseconds, which fromisoformat does not take; microseconds do.
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", rfc3339)).timestamp()


def _drive_load(gw: Gateway, prometheus: PrometheusServer) -> int:
    """The load every dashboard panel and alert needs data from, in two rounds with a scrape
    between them: a series born during the first round (a route's first request) is seen
    rising in the second, as it would be under steady traffic. Returns the photos stored."""
    photos = photo_paths()[:6]
    statuses = _round(gw, photos[:3])
    done = time.time()
    assert wait_until(lambda: _targets_scraped_after(prometheus, done + SCRAPE_S), 30, 0.5, prometheus.alive), \
        "targets not scraped after the first round within 30 s"
    statuses += _round(gw, photos[3:])
    # One search slot: the bursts are partly shed with 503 (the 5xx the error panels and the
    # error-rate alert need), the rest served.
    assert 503 in statuses and 200 in statuses, statuses
    return len(photos)


def _round(gw: Gateway, photos: list[str]) -> list[int]:
    """Three photos stored (two alone, one in a batch), one again, one that is not a photo,
    text searches (one repeated: a cache hit), a bad request, a record read, a rerank, and a
    burst of 8 image searches whose statuses are returned."""
    for path in photos[:2]:
        r = gw.post("/ingest", files={"image": (os.path.basename(path), read_bytes(path))})
        assert r.status_code == 201, r.text
    r = gw.post("/ingest/batch", files=[("image", (os.path.basename(photos[2]), read_bytes(photos[2])))])
    assert r.status_code == 200 and [i["status"] for i in r.json()["results"]] == ["created"], r.text
    r = gw.post("/ingest", files={"image": ("again.jpg", read_bytes(photos[0]))})
    assert r.status_code == 200 and r.json()["status"] == "already_stored", r.text
    # Not a photo: the ingest fails in Triton's preprocess (a Triton failure and a 4xx).
    r = gw.post("/ingest", files={"image": ("broken.jpg", read_bytes(photos[0])[:2000])})
    assert 400 <= r.status_code < 500, r.text
    for query in ("a dog on a beach", "a dog on a beach", "a red car"):
        r = gw.get("/search/text", params={"q": query, "k": 3})
        assert r.status_code == 200, r.text
    r = gw.get("/search/text", params={"k": 3})
    assert r.status_code == 400, r.text
    r = gw.get(f"/images/{sha256(photos[1])}")
    assert r.status_code == 200, r.text
    r = gw.post("/faces/rerank", json={"query": [1, 0], "candidates": [{"id": "a", "embedding": [1, 0.1]}]})
    assert r.status_code == 200, r.text
    photo = read_bytes(photo_paths()[7])
    barrier = threading.Barrier(8)

    def similar():
        barrier.wait(timeout=30)
        return gw.post("/search/similar", params={"k": 3}, files={"image": ("q.jpg", photo)}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [f.result(timeout=300) for f in [pool.submit(similar) for _ in range(8)]]


def _finite(result: list[dict]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


def _window(started: float) -> str:
    return f"{int(time.time() - started) + 30}s"


def test_every_dashboard_query_returns_data(stack):
    prometheus, _, _, _, started = stack
    window = _window(started)
    empty = []
    checked = 0
    for where, expr in panel_queries():
        result = prometheus.query(substitute(expr, window))  # asserts Prometheus accepted it
        if normalized(expr) in GPU_ONLY:
            continue
        checked += 1
        if not _finite(result):
            empty.append(f"{where}: {expr}\n  -> {result}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    assert checked >= 20, checked


def test_every_alert_expression_returns_data(stack):
    prometheus, _, _, _, started = stack
    empty = []
    rules = alert_rules()
    for rule in rules:
        value = left_side(rule["expr"])
        result = prometheus.query(value)
        if normalized(value) in GPU_ONLY:
            continue
        if not _finite(result):
            empty.append(f"{rule['file']}: {rule['alert']}: {value}\n  -> {result}")
    assert not empty, "alert expressions without data:\n" + "\n".join(empty)
    # Prometheus loaded every rule and evaluates them without errors.
    loaded = {r["name"]: r for g in prometheus.api("rules")["groups"] for r in g["rules"]}
    assert set(loaded) == {r["alert"] for r in rules}
    assert all(r["health"] == "ok" for r in loaded.values()), [(n, r.get("lastError")) for n, r in loaded.items()]


def test_dashboard_variables_list_the_live_values(stack):
    prometheus = stack[0]
    wanted = {"model": "visual_ingest", "route": "/ingest"}
    for board, variable, selector, label in variable_queries():
        values = prometheus.api(f"label/{label}/values", **{"match[]": selector})
        assert wanted[variable] in values, f"{board}: ${variable} = {values}"


def test_health_gauges_show_the_dead_endpoint_and_the_store(stack):
    prometheus, gw, dead_address, stored, _ = stack
    ready = {s["metric"]["endpoint"]: s["value"][1] for s in prometheus.query("gateway_triton_endpoint_ready")}
    assert ready == {f"http://{gw.triton_grpc[0]}": "1", f"http://{dead_address}": "0"}
    images = prometheus.query('gateway_store_images{store="embedded"}')
    assert [s["value"][1] for s in images] == [str(stored)] and gw.count() == stored
    # The dead endpoint's alert is active (pending: it waits its `for` before firing), the
    # live one's is not.
    def endpoint_alerts():
        alerts = prometheus.api("alerts")["alerts"]
        return {a["labels"]["endpoint"]: a["state"] for a in alerts if a["labels"]["alertname"] ==
                "GatewayTritonEndpointDown"}

    assert wait_until(lambda: f"http://{dead_address}" in endpoint_alerts(), 15, 0.5, prometheus.alive)
    assert set(endpoint_alerts()) == {f"http://{dead_address}"}
    assert endpoint_alerts()[f"http://{dead_address}"] in ("pending", "firing")
