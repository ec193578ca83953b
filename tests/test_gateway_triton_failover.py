"""The gateway over two Triton servers (issue 18; docs/gateway.md, "Several Triton servers").

Two tritonservers of this module's own (the ingest models and clip_text, from the session's
test repository; the session server is not started) and one gateway started with
`--triton A,B` and a 0.5 s readiness probe:

- both serve: /health lists both endpoints ready, and a batch's calls are spread over both
  servers, one call per photo (each server's own metrics count them);
- a photo Triton rejects (corrupt bytes) fails with 422 and reaches one server once: the two
  servers' preprocess counts grow by exactly one failure in total;
- kill -9 of one server (its whole process group) while a batch is running on both, with
  text searches sent all along: every photo of the batch is acknowledged once or failed with
  an error naming Triton; the store holds exactly the acknowledged photos; the failed ones
  ingest when sent again; every search answers 200; /health shows the killed endpoint out
  with the error that took it out, and the survivor ready; the survivor did not crash;
- the killed server started again on the same ports: /health shows it ready within 15 s,
  and it is sent searches and ingests again (its metrics count them).
"""
from __future__ import annotations

import glob
import os
import re
import threading
import time

import pytest
import requests

from conftest import LOG_DIR as TRITON_LOG_DIR
from serverctl import proc
from serverctl.triton import TritonServer
from test_gateway import GATEWAY_BIN, Gateway, photo_paths, read_bytes, sha256

MODELS = ["preprocess", "yolo", "clip_image", "box_embed", "visual_ingest", "clip_text"]
SHARED_BATCH = 8  # photos of the first batch, spread over both servers
KILL_BATCH = 24  # photos of the batch during which one server is killed
PROBE_MS = 500
SUCCESS = "nv_inference_request_success"
FAILURE = "nv_inference_request_failure"


def triton_count(server: TritonServer, metric: str, model: str) -> int:
    """A request counter from the server's own Prometheus metrics."""
    text = requests.get(server.metrics_url, timeout=10).text
    values = re.findall(rf'^{metric}\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$', text, flags=re.M)
    return int(sum(float(v) for v in values))


def upload(path: str) -> dict:
    return {"files": {"image": (os.path.basename(path), read_bytes(path))}}


def batch(paths: list[str]) -> dict:
    return {"files": [("image", (os.path.basename(p), read_bytes(p))) for p in paths]}


def pool_log(gw: Gateway, offset: int) -> list[str]:
    """The gateway's log lines about its Triton pool written after `offset`."""
    with open(gw.log_path, "rb") as f:
        f.seek(offset)
        return [line for line in f.read().decode("utf-8", "replace").splitlines() if "Triton endpoint" in line]


def endpoints(gw: Gateway) -> list[dict]:
    return gw.get("/health").json()["triton"]["endpoints"]


def wait(what: str, check, timeout: float, poll: float = 0.1) -> None:
    if not proc.wait_until(check, timeout, poll):
        pytest.fail(f"{what}: not within {timeout} s", pytrace=False)


def kill9(server: TritonServer) -> None:
    """SIGKILL the server and its Python-backend stubs, as a machine failure would, and remove
    the shared-memory regions they can no longer remove themselves."""
    prefix_arg = "--backend-config=python,shm-region-prefix-name="
    prefixes = [a.decode()[len(prefix_arg):] for a in proc.cmdline(server.pid) if a.decode().startswith(prefix_arg)]
    proc.kill(server.pid, group=True)
    server.stop()  # reaps the killed process: "not running"
    for prefix in prefixes:
        for path in glob.glob(f"/dev/shm/{prefix}*"):
            os.remove(path)


@pytest.fixture(scope="module")
def pair(test_repository, tmp_path_factory):
    """A gateway over two fresh Tritons: (gateway, [server A, server B])."""
    if not os.path.exists(GATEWAY_BIN):
        pytest.skip(f"!!! failover tests NOT RUN: {GATEWAY_BIN} is missing (cargo build --release -p gateway) !!!")
    if len(photo_paths()) < SHARED_BATCH + KILL_BATCH + 4:
        pytest.skip(f"!!! failover tests NOT RUN: fewer than {SHARED_BATCH + KILL_BATCH + 4} photos !!!")
    servers = [TritonServer(test_repository, MODELS,
                            log_path=os.path.join(TRITON_LOG_DIR, f"tritonserver-failover-{name}-{os.getpid()}.log"))
               for name in "ab"]
    tmp = tmp_path_factory.mktemp("failover")
    config = tmp / "gateway.toml"
    config.write_text(f"[triton]\nprobe_interval_ms = {PROBE_MS}\nprobe_timeout_ms = {PROBE_MS}\n")
    gw = None
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(timeout=300)
        gw = Gateway(str(tmp / "data"), [s.grpc_address for s in servers], extra_args=("--config", str(config)))
        gw.start()
        yield gw, servers
    finally:
        if gw is not None:
            gw.stop()
        crashes = {s.log_path: s.crash_lines() for s in servers}
        for server in servers:
            server.stop()
    crashed = {path: lines for path, lines in crashes.items() if lines}
    assert not crashed, f"crash lines in a Triton log: {crashed}"


def test_both_endpoints_are_ready_and_share_the_calls(pair):
    gw, servers = pair
    health = gw.get("/health").json()
    assert health["status"] == "ok", health
    listed = health["triton"]["endpoints"]
    assert [e["endpoint"] for e in listed] == [f"http://{s.grpc_address}" for s in servers], listed
    for endpoint in listed:
        assert endpoint["ready"] and endpoint["in_flight"] == 0 and endpoint["taken_out"] == 0, endpoint
        assert "last_error" not in endpoint, endpoint

    before = [triton_count(s, SUCCESS, "visual_ingest") for s in servers]
    r = gw.post("/ingest/batch", **batch(photo_paths()[:SHARED_BATCH]))
    assert r.status_code == 200 and r.json()["created"] == SHARED_BATCH, r.text
    grown = [triton_count(s, SUCCESS, "visual_ingest") - b for s, b in zip(servers, before)]
    print(f"\n{SHARED_BATCH} photos, visual_ingest calls per server: {grown}")
    # One call per photo (nothing sent twice), and the batch's 4 parallel calls on both servers.
    assert sum(grown) == SHARED_BATCH and min(grown) >= 1, grown


def test_a_photo_triton_rejects_is_sent_to_one_server_once(pair):
    gw, servers = pair
    # Counted at the ensemble's first step: Triton 2.51 counts a failed ensemble request twice
    # in the ensemble's own failure counter (measured: 2 per request), preprocess once.
    for i in range(3):
        before = [triton_count(s, m, "preprocess") for s in servers for m in (SUCCESS, FAILURE)]
        corrupt = b"\xff\xd8\xff\xe0" + os.urandom(4096)
        r = gw.post("/ingest", files={"image": (f"corrupt-{i}.jpg", corrupt, "image/jpeg")})
        assert r.status_code == 422 and "Triton" in r.json()["error"], r.text
        after = [triton_count(s, m, "preprocess") for s in servers for m in (SUCCESS, FAILURE)]
        grown = [a - b for a, b in zip(after, before)]
        # [A success, A failure, B success, B failure]: one failure on one server, nothing else.
        assert sorted(grown) == [0, 0, 0, 1] and grown[0] == grown[2] == 0, grown
    assert all(e["ready"] and e["taken_out"] == 0 for e in endpoints(gw)), "a rejection took an endpoint out"


def test_kill9_of_one_server_during_a_batch_then_its_restart(pair):
    gw, (victim, survivor) = pair
    paths = photo_paths()[SHARED_BATCH:SHARED_BATCH + KILL_BATCH]
    stored_before = gw.count()
    with open(gw.log_path, "rb") as f:
        log_offset = f.seek(0, os.SEEK_END)

    searches: list[tuple[float, float, int | None, str]] = []  # (sent at, seconds, status, body or error)
    stop = threading.Event()

    def search_all_along():
        i = 0
        while not stop.is_set():
            i += 1  # a new text each time: no cached embedding, every search calls Triton
            sent = time.monotonic()
            try:
                r = requests.get(f"{gw.url}/search/text", params={"q": f"failover query {i}", "k": 3}, timeout=60)
                searches.append((sent, time.monotonic() - sent, r.status_code, r.text[:300]))
            except requests.RequestException as e:
                searches.append((sent, time.monotonic() - sent, None, str(e)))

    answer: dict = {}

    def ingest():
        started = time.monotonic()
        answer["response"] = gw.post("/ingest/batch", **batch(paths))
        answer["took"] = time.monotonic() - started

    searcher = threading.Thread(target=search_all_along)
    ingester = threading.Thread(target=ingest)
    served_before = triton_count(victim, SUCCESS, "visual_ingest")
    searcher.start()
    ingester.start()
    try:
        # Kill once the victim has answered part of this batch and has calls of it in flight.
        wait("the victim serving the batch",
             lambda: triton_count(victim, SUCCESS, "visual_ingest") >= served_before + 2
             and endpoints(gw)[0]["in_flight"] >= 1, timeout=120, poll=0.1)
        kill9(victim)
        killed_at = time.monotonic()
        ingester.join(timeout=300)
        assert not ingester.is_alive(), "the batch did not finish"
        time.sleep(1.0)  # searches go on a little after the batch
    finally:
        stop.set()
        searcher.join(timeout=90)
        ingester.join(timeout=300)

    r = answer["response"]
    assert r.status_code == 200, r.text
    items = r.json()["results"]
    # One answer per photo, in upload order.
    assert [item["id"] for item in items] == [sha256(p) for p in paths]
    acknowledged, failed = set(), []
    for item, path in zip(items, paths):
        if item["status"] == "failed":
            assert item["http_status"] == 503 and "Triton" in item["error"], item
            failed.append(path)
        else:
            assert item["status"] == "created", item
            acknowledged.add(item["id"])
    # Nothing stored twice, nothing unacknowledged stored.
    assert gw.count() == stored_before + len(acknowledged)
    assert all(gw.get(f"/images/{i}").status_code == 200 for i in acknowledged)
    assert all(gw.get(f"/images/{sha256(p)}").status_code == 404 for p in failed)

    after_kill = sorted(s[1] for s in searches if s[0] >= killed_at)
    bad = [s for s in searches if s[2] != 200]
    print(f"\nbatch of {len(paths)} took {answer['took']:.1f} s: {len(acknowledged)} created, {len(failed)} failed; "
          f"{len(searches)} searches, {len(bad)} not 200; {len(after_kill)} sent after the kill: median "
          f"{after_kill[len(after_kill) // 2] * 1000:.0f} ms, slowest {after_kill[-1] * 1000:.0f} ms")
    for item in items:
        if item["status"] == "failed":
            print(f"  failed: {item['error']}")
    assert not bad, bad[:5]
    assert len(after_kill) >= 3, "too few searches after the kill to show anything"

    victim_url = f"http://{victim.grpc_address}"
    pool_lines = pool_log(gw, log_offset)
    print("gateway log:\n  " + "\n  ".join(pool_lines[:6]))
    assert any("taken out" in line and victim_url in line for line in pool_lines), pool_lines

    health = gw.get("/health")
    assert health.status_code == 200, "the survivor alone must keep the gateway ready"
    dead, alive = health.json()["triton"]["endpoints"]
    assert dead["endpoint"] == victim_url and not dead["ready"] and dead["taken_out"] >= 1, dead
    assert victim_url in dead["last_error"], dead
    assert alive["ready"] and alive["taken_out"] == 0, alive
    assert survivor.alive() and not survivor.crash_lines(), (
        f"the surviving Triton crashed ({survivor.log_path}); Triton 2.51's gRPC cancellation race "
        f"(server#7368) is the first suspect")

    for path in failed:
        r = gw.post("/ingest", **upload(path))
        assert r.status_code == 201, r.text
    assert gw.count() == stored_before + len(paths)

    # The killed server again, on the same ports. No /health call until it is back in the
    # pool: /health probes too, and this is the background probe's job.
    victim.start(append_log=True)
    victim.wait_ready(timeout=300)
    ready_at = time.monotonic()
    wait("the probe putting the restarted server back",
         lambda: any("back in the pool" in line and victim_url in line for line in pool_log(gw, log_offset)),
         timeout=15)
    print(f"the probe put the restarted server back {time.monotonic() - ready_at:.2f} s after it was ready "
          f"(probe every {PROBE_MS} ms)")
    assert endpoints(gw)[0]["ready"]
    for i in range(10):
        r = gw.get("/search/text", params={"q": f"after the restart {i}", "k": 3})
        assert r.status_code == 200, r.text
    more = photo_paths()[SHARED_BATCH + KILL_BATCH:SHARED_BATCH + KILL_BATCH + 4]
    r = gw.post("/ingest/batch", **batch(more))
    assert r.status_code == 200 and r.json()["created"] == len(more), r.text
    texts, photos = triton_count(victim, SUCCESS, "clip_text"), triton_count(victim, SUCCESS, "visual_ingest")
    print(f"the restarted server served {texts} of 10 searches and {photos} of {len(more)} photos")
    assert texts >= 3 and photos >= 1, (texts, photos)
