"""Callers that go away never cancel a Triton call.

Triton 2.51 (the PyPI build these tests run) can crash with SIGSEGV when a gRPC call is
cancelled while in flight (server#7368, fixed in 24.12), and a dropped Rust future cancels
its call. Two everyday events drop one: with faces indexed, an undecodable upload fails
`visual_ingest` while the photo's `face_embed` call is still running (the two are awaited
together), and a client that closes its connection mid-upload drops its request's handler.
The gateway runs every inference call in a task of its own (gateway/src/triton.rs), so
neither may reach Triton: after a burst of both, Triton is still running, its log has no
crash, and the same gateway still ingests. The schemathesis run (test_openapi_contract.py)
first hit this crash.
"""
from __future__ import annotations

import os
import socket
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from test_gateway import Gateway, gateway, photo_paths, read_bytes  # noqa: F401  (fixture)

BURST = 16


def abandon_upload(url: str, photo: bytes) -> None:
    """Sends a whole POST /ingest, then closes the connection without reading the answer."""
    prepared = requests.Request("POST", url + "/ingest", files={"image": ("photo.jpg", photo, "image/jpeg")}).prepare()
    target = urllib.parse.urlsplit(url)
    head = ["POST /ingest HTTP/1.1", f"Host: {target.netloc}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in prepared.headers.items()]
    with socket.create_connection((target.hostname, target.port), timeout=10) as conn:
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + prepared.body)
        # Long enough for the handler to reach Triton, short of its answer.
        time.sleep(0.05)


@pytest.mark.usefixtures("gateway")
def test_failed_and_abandoned_requests_never_cancel_a_triton_call(triton, tmp_path):
    photos = photo_paths()[-(BURST + 1):]
    gw = Gateway(str(tmp_path / "data"), triton.grpc_address, extra_args=("--index-faces", "true")).start()
    try:
        corrupt = [b"\xff\xd8\xff\xe0" + os.urandom(4096) for _ in range(BURST)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            failing = [pool.submit(gw.post, "/ingest", files={"image": ("bad.jpg", data, "image/jpeg")})
                       for data in corrupt]
            abandoned = [pool.submit(abandon_upload, gw.url, read_bytes(p)) for p in photos[:BURST]]
            for future in failing:
                r = future.result(timeout=300)
                assert r.status_code == 422, r.text
            for future in abandoned:
                future.result(timeout=60)
        # The abandoned calls run to their end inside the gateway (nothing is stored for them:
        # no one was told it was); give them the time to finish before looking at Triton.
        time.sleep(5)
        assert requests.get(f"{triton.http_url}/v2/health/ready", timeout=10).status_code == 200
        assert not triton.crash_lines(), f"{triton.log_path}:\n" + "\n".join(triton.crash_lines()[:20])
        r = gw.post("/ingest", files={"image": ("last.jpg", read_bytes(photos[-1]), "image/jpeg")})
        assert r.status_code == 201, r.text
        assert gw.get("/health").status_code == 200
    finally:
        gw.stop()
