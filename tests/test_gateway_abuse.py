"""Abuse of an exposed gateway, against the real binary and the session's real tritonserver.

One gateway for the module, run as it would be for other people: read and write keys, an
ops address for health and metrics, and small limits (tests/gateway_abuse.toml values are
written below) so every defence is reached with little data. Each test asserts the
specific error, that the service stays healthy, and that nothing acknowledged is lost:
the ops /health counts the stored photos before and after.
"""
from __future__ import annotations

import io
import json
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from serverctl.proc import free_port, proc_status_kib
from test_gateway import Gateway, gateway, photo_paths, read_bytes  # noqa: F401  (fixture)
from test_gateway_faces import face_photo, listed_faces

READ_KEY = "read-" + "r" * 32
WRITE_KEY = "write-" + "w" * 32
MAX_BATCH = 64  # limits.max_batch_images default
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # server.max_request_bytes default
MAX_METADATA = 2048
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
SEARCH_SLOTS = 2
# One face photo at a time in the gateway's decode budget (12 Mpx uploads, 13 Mpx budget).
DECODE_BUDGET = 13_000_000
CONFIG = f"""
[server]
max_concurrent_search = {SEARCH_SLOTS}
header_read_timeout_ms = {int(HEADER_TIMEOUT_S * 1000)}
body_read_timeout_ms = {int(BODY_TIMEOUT_S * 1000)}

[limits]
max_metadata_bytes = {MAX_METADATA}
decode_pixel_budget = {DECODE_BUDGET}
decode_wait_ms = 120000
"""


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


class Locked:
    """The keyed gateway: `gw` for requests, `ops` for key-less health and metrics."""

    def __init__(self, gw: Gateway, ops_url: str):
        self.gw = gw
        self.ops_url = ops_url

    def stored(self) -> int:
        return requests.get(f"{self.ops_url}/health", timeout=10).json()["store"]["images"]

    def healthy(self) -> bool:
        return requests.get(f"{self.ops_url}/health", timeout=10).status_code == 200

    def metrics(self) -> str:
        return requests.get(f"{self.ops_url}/metrics", timeout=10).text

    def ingest(self, path: str, key: str = WRITE_KEY, **kw):
        return self.gw.post("/ingest", files={"image": (os.path.basename(path), read_bytes(path))},
                            headers=auth(key), **kw)


@pytest.fixture(scope="module")
def locked(gateway, triton, tmp_path_factory):  # noqa: F811  (gateway loads the models)
    data = tmp_path_factory.mktemp("locked-gateway")
    config = data / "gateway.toml"
    config.write_text(CONFIG)
    ops_port = free_port()
    gw = Gateway(str(data / "data"), triton.grpc_address,
                 extra_args=("--config", str(config), "--ops-listen", f"127.0.0.1:{ops_port}",
                             "--read-keys", READ_KEY, "--write-keys", WRITE_KEY)).start()
    server = Locked(gw, f"http://127.0.0.1:{ops_port}")
    # Something to search and to lose: three photos acknowledged before the abuse.
    for path in photo_paths()[:3]:
        r = server.ingest(path)
        assert r.status_code == 201, r.text
    yield server
    gw.stop()


@pytest.fixture(autouse=True)
def nothing_lost(request):
    """Around each test: the keyed gateway is healthy after it and stores at least what it
    stored before (no test deletes)."""
    if "locked" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("locked")
    before = server.stored()
    yield
    assert server.healthy(), server.gw.log_tail()
    assert server.stored() >= before


def error_of(r) -> str:
    return r.json()["error"]


def test_writes_need_a_write_key(locked):
    gw, photo = locked.gw, photo_paths()[10]
    before = locked.stored()
    r = gw.post("/ingest", files={"image": ("p.jpg", read_bytes(photo))})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer", r.text
    assert locked.ingest(photo, key="not-" + "x" * 30).status_code == 401
    r = locked.ingest(photo, key=READ_KEY)
    assert r.status_code == 403 and "write key" in error_of(r), r.text
    stored_id = gw.get("/search/text", params={"q": "a photo", "k": 1}, headers=auth(READ_KEY)).json()
    image_id = stored_id["results"][0]["image_id"]
    assert requests.delete(f"{gw.url}/images/{image_id}", headers=auth(READ_KEY), timeout=10).status_code == 403
    assert requests.delete(f"{gw.url}/images/{image_id}", timeout=10).status_code == 401
    assert locked.stored() == before, "a refused write changed the store"
    # Reads: refused without a key, served with the read key, photo files included.
    assert gw.get("/search/text", params={"q": "a photo"}).status_code == 401
    assert gw.get(f"/images/{image_id}/file").status_code == 401
    assert gw.get(f"/images/{image_id}/file", headers=auth(READ_KEY)).status_code == 200
    assert gw.get("/metrics").status_code == 401


def test_public_health_is_a_summary_unless_the_caller_holds_a_key(locked):
    summary = locked.gw.get("/health")
    assert summary.status_code == 200
    assert summary.json() == {"status": "ok", "triton_ready": True, "store_ready": True}, summary.text
    full = locked.gw.get("/health", headers=auth(READ_KEY)).json()
    assert full["triton"]["models"] and "images" in full["store"]
    assert locked.gw.get("/health", headers=auth("wrong-" + "k" * 30)).status_code == 401
    # The page is public (it holds no data and asks for a key itself).
    page = locked.gw.get("/")
    assert page.status_code == 200 and 'id="key-form"' in page.text


def test_cross_origin_and_foreign_host_requests_are_refused(locked):
    gw, photo = locked.gw, photo_paths()[11]
    before = locked.stored()
    r = gw.post("/ingest", files={"image": ("p.jpg", read_bytes(photo))},
                headers={**auth(WRITE_KEY), "Origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-origin" in error_of(r), r.text
    r = gw.post("/search/hybrid", json={"text": "x"}, headers={**auth(READ_KEY), "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403, r.text
    # DNS rebinding: a page on attacker.example resolved to 127.0.0.1 sends its own Host.
    r = gw.get("/health", headers={"Host": f"attacker.example:{gw.port}"})
    assert r.status_code == 403 and "allowed_hosts" in error_of(r), r.text
    assert locked.stored() == before
    # The gateway's own origin (the page) may write.
    r = gw.post("/ingest", files={"image": ("p.jpg", read_bytes(photo))},
                headers={**auth(WRITE_KEY), "Origin": gw.url})
    assert r.status_code == 201, r.text


def test_tag_flood_is_refused_at_once(locked):
    # 600 KB of distinct tags: the old quadratic parser spent tens of seconds on this.
    tags = ",".join(f"tag{i}" for i in range(80_000))
    started = time.monotonic()
    r = locked.gw.post("/ingest", files={"image": ("p.jpg", read_bytes(photo_paths()[12]))},
                       data={"tags": tags}, headers=auth(WRITE_KEY))
    elapsed = time.monotonic() - started
    assert r.status_code == 400 and "limits.max_tags" in error_of(r), r.text
    assert elapsed < 5, f"the tag flood took {elapsed:.1f} s"
    # A flood of one repeated tag is one tag.
    r = locked.gw.post("/ingest", files={"image": ("p.jpg", read_bytes(photo_paths()[12]))},
                       data={"tags": "beach," * 100_000}, headers=auth(WRITE_KEY))
    assert r.status_code == 201, r.text
    record = locked.gw.get(f"/images/{r.json()['id']}", headers=auth(READ_KEY)).json()
    assert record["tags"] == ["beach"]


def test_metadata_flood_then_search(locked):
    gw = locked.gw
    flood = json.dumps({"notes": "x" * (4 * 1024 * 1024)})
    r = gw.post("/ingest", files={"image": ("p.jpg", read_bytes(photo_paths()[13]))},
                data={"metadata": flood}, headers=auth(WRITE_KEY))
    assert r.status_code == 400 and "limits.max_metadata_bytes" in error_of(r), r.text[:300]
    deep = '{"a": ' + "[" * 500 + "]" * 500 + "}"
    r = gw.post("/ingest", files={"image": ("p.jpg", read_bytes(photo_paths()[13]))},
                data={"metadata": deep}, headers=auth(WRITE_KEY))
    assert r.status_code == 400 and "limits.max_metadata_depth" in error_of(r), r.text[:300]
    # The most metadata allowed, stored; searches leave it out unless asked for.
    most = json.dumps({"notes": "y" * (MAX_METADATA - 20)})
    r = gw.post("/ingest", files={"image": ("p.jpg", read_bytes(photo_paths()[13]))},
                data={"metadata": most}, headers=auth(WRITE_KEY))
    assert r.status_code == 201, r.text
    image_id = r.json()["id"]
    hits = gw.get("/search/text", params={"q": "a photo", "k": 50}, headers=auth(READ_KEY))
    assert hits.status_code == 200
    assert all("metadata" not in hit for hit in hits.json()["results"])
    assert len(hits.content) < 200_000, len(hits.content)
    asked = gw.get("/search/text", params={"q": "a photo", "k": 50, "include_metadata": "true"},
                   headers=auth(READ_KEY)).json()["results"]
    mine = [hit for hit in asked if hit["image_id"] == image_id]
    assert mine and mine[0]["metadata"] == json.loads(most)
    # A JSON body nested past limits.max_json_depth is refused before parsing.
    body = '{"text": "x", "tags": ' + "[" * 10_000 + "]" * 10_000 + "}"
    r = gw.post("/search/hybrid", data=body, headers={**auth(READ_KEY), "Content-Type": "application/json"})
    assert r.status_code == 400 and "limits.max_json_depth" in error_of(r), r.text
    r = gw.get("/search/text", params={"q": "x" * 20_000}, headers=auth(READ_KEY))
    assert r.status_code == 414 and "limits.max_query_string_bytes" in error_of(r), r.text


def test_health_stays_fast_while_the_largest_batch_is_stored(locked):
    photos = photo_paths()[100:100 + MAX_BATCH]
    files = [("image", (os.path.basename(p), read_bytes(p))) for p in photos]
    before = locked.stored()
    with ThreadPoolExecutor(max_workers=1) as pool:
        batch = pool.submit(locked.gw.post, "/ingest/batch", files=files, headers=auth(WRITE_KEY))
        latencies = []
        while not batch.done():
            started = time.monotonic()
            assert locked.gw.get("/health").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.1)
        r = batch.result()
    assert r.status_code == 200, r.text
    assert r.json()["created"] == MAX_BATCH, r.json()
    assert locked.stored() == before + MAX_BATCH
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(f"/health p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
          f"over {len(latencies)} polls while a batch of {MAX_BATCH} photos was stored")
    assert len(latencies) >= 10 and p99 < 1.0, latencies


def test_oversized_batches_are_refused_whole(locked):
    before = locked.stored()
    photos = photo_paths()[20:20 + MAX_BATCH + 1]
    files = [("image", (os.path.basename(p), read_bytes(p))) for p in photos]
    r = locked.gw.post("/ingest/batch", files=files, headers=auth(WRITE_KEY))
    assert r.status_code == 400 and "limits.max_batch_images" in error_of(r), r.text
    big = os.urandom(MAX_REQUEST_BYTES + 1024)
    r = locked.gw.post("/ingest", files={"image": ("big.jpg", big)}, headers=auth(WRITE_KEY))
    assert r.status_code == 413 and "server.max_request_bytes" in error_of(r), r.text
    assert locked.stored() == before, "a refused batch stored something"


def _slow_header_client(port: int, stop: threading.Event, closed: list) -> None:
    """Opens a connection and trickles header bytes, never finishing them."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        try:
            while not stop.is_set():
                conn.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.5)
        except OSError:
            closed.append(time.monotonic() - started)


def test_slow_clients_are_cut_off_and_health_stays_fast(locked):
    port = locked.gw.port
    stop, closed = threading.Event(), []
    clients = [threading.Thread(target=_slow_header_client, args=(port, stop, closed)) for _ in range(64)]
    for client in clients:
        client.start()
    latencies = []
    try:
        for _ in range(40):
            started = time.monotonic()
            assert locked.gw.get("/health").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
    finally:
        time.sleep(HEADER_TIMEOUT_S + 2)
        stop.set()
        for client in clients:
            client.join(timeout=30)
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(f"/health p99 {p99 * 1000:.1f} ms with 64 slow-header clients; {len(closed)} cut off")
    assert p99 < 1.0, latencies
    assert len(closed) == len(clients), f"only {len(closed)} of {len(clients)} slow clients were cut off"
    assert max(closed) < HEADER_TIMEOUT_S + 3, closed
    # An idle kept-alive connection is closed after the same time.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        while conn.recv(65536):
            pass
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 3


def test_slow_body_gets_408(locked):
    with socket.create_connection(("127.0.0.1", locked.gw.port), timeout=30) as conn:
        head = (f"POST /search/hybrid HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {READ_KEY}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        conn.sendall(head.encode() + b'{"text": ')
        started = time.monotonic()
        answer = conn.recv(65536)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"server.body_read_timeout_ms" in answer
    assert BODY_TIMEOUT_S - 0.5 < elapsed < BODY_TIMEOUT_S + 3, elapsed


def test_a_burst_beyond_the_search_limit_is_shed_then_served(locked):
    photo = read_bytes(photo_paths()[30])
    barrier = threading.Barrier(16)

    def similar():
        barrier.wait(timeout=30)
        started = time.monotonic()
        r = locked.gw.post("/search/similar", params={"k": 5}, files={"image": ("q.jpg", photo)},
                           headers=auth(READ_KEY))
        return r, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = [f.result(timeout=300) for f in [pool.submit(similar) for _ in range(16)]]
    shed = [(r, t) for r, t in outcomes if r.status_code == 503]
    served = [r for r, _ in outcomes if r.status_code == 200]
    assert len(shed) + len(served) == 16, [r.status_code for r, _ in outcomes]
    assert shed, "16 simultaneous searches with 2 slots: none was shed"
    assert len(served) >= SEARCH_SLOTS
    for r, elapsed in shed:
        assert r.headers["Retry-After"] == "1" and "server.max_concurrent_search" in error_of(r)
        assert elapsed < 1.0, f"a shed request took {elapsed:.2f} s"
    r = locked.gw.post("/search/similar", params={"k": 5}, files={"image": ("q.jpg", photo)},
                       headers=auth(READ_KEY))
    assert r.status_code == 200, r.text


def test_custom_methods_and_paths_do_not_grow_the_metric_series(locked):
    def series() -> int:
        return len(re.findall(r"^gateway_http_requests_total\{", locked.metrics(), re.MULTILINE))

    locked.gw.get("/nowhere", headers=auth(READ_KEY))
    requests.request("BREW", f"{locked.gw.url}/search/text", timeout=10)
    before = series()
    for i in range(40):
        requests.request(f"METHOD{i}", f"{locked.gw.url}/search/text", timeout=10)
        requests.get(f"{locked.gw.url}/random/{i}", headers=auth(READ_KEY), timeout=10)
    assert series() == before, "arbitrary methods or paths created metric series"
    assert 'method="other"' in locked.metrics()


def _big_face_photo() -> tuple[bytes, int]:
    """A listed face photo upscaled to about 12 megapixels, stored with an EXIF rotation."""
    name = next(iter(listed_faces()))
    with Image.open(face_photo(name)) as im:
        im = im.convert("RGB").resize((4000, 3000))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=90, exif=exif)
    return out.getvalue(), 4000 * 3000


def test_concurrent_max_pixel_uploads_wait_for_the_decode_budget(locked):
    photo, pixels = _big_face_photo()
    assert pixels < DECODE_BUDGET < 2 * pixels
    baseline = proc_status_kib(locked.gw.proc.pid, "VmRSS")

    def faces():
        return locked.gw.post("/faces/embeddings", files={"image": ("big.jpg", photo)},
                              data={"aligned_faces": "true"}, headers=auth(WRITE_KEY))

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = [f.result(timeout=600) for f in [pool.submit(faces) for _ in range(6)]]
    for r in answers:
        assert r.status_code == 200, r.text[:300]
        result = r.json()["results"][0]
        assert result["faces"] and result["faces"][0]["aligned_face_png"], result.get("error")
    peak = proc_status_kib(locked.gw.proc.pid, "VmHWM")
    # One decode at a time: its RGB8 pixels and capped copy (3 + 3 bytes a pixel), the six
    # request bodies, and slack for the allocator; six decodes at once would need over 400 MB.
    bound_kib = (6 * pixels + 6 * len(photo) * 2) // 1024 + 96 * 1024
    print(f"gateway peak RSS {peak // 1024} MiB (RSS before {baseline // 1024} MiB), "
          f"growth bound {bound_kib // 1024} MiB")
    assert peak - baseline < bound_kib, (peak, baseline, bound_kib)
