"""Minimal KServe v2 HTTP client with Triton's binary tensor extension.

Written from the protocol docs so the tests and the benchmarks need only `requests`: the
JSON header goes first, raw little-endian tensor bytes follow, and
`Inference-Header-Content-Length` says where the JSON ends (same for the response when
outputs ask for binary_data). In scripts/ so that both import it without the test suite.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import requests

DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP32": np.dtype("<f4"),
}
_BY_NUMPY = {v: k for k, v in DTYPES.items()}


@dataclass
class InferResult:
    status: int
    outputs: dict  # name -> np.ndarray (empty on error)
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


def encode_request(inputs: dict, outputs: list[str]) -> tuple[bytes, int]:
    header = {"inputs": [], "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in outputs]}
    blobs = []
    for name, array in inputs.items():
        array = np.ascontiguousarray(array)
        dtype = _BY_NUMPY.get(array.dtype)
        if dtype is None:
            raise TypeError(f"unsupported dtype {array.dtype} for {name}")
        data = array.astype(DTYPES[dtype], copy=False).tobytes()
        header["inputs"].append({"name": name, "shape": list(array.shape), "datatype": dtype,
                                 "parameters": {"binary_data_size": len(data)}})
        blobs.append(data)
    head = json.dumps(header).encode()
    return head + b"".join(blobs), len(head)


def decode_response(status: int, body: bytes, header_len: str | None) -> InferResult:
    # Triton leaves the length header out when no binary bytes follow (e.g. all outputs empty).
    n = int(header_len) if header_len is not None else len(body)
    doc = json.loads(body[:n] or b"{}")
    if status != 200 or "error" in doc:
        return InferResult(status, {}, doc.get("error", f"HTTP {status}"))
    offset = n
    outs = {}
    for o in doc.get("outputs", []):
        size = o.get("parameters", {}).get("binary_data_size")
        dtype = DTYPES[o["datatype"]]
        if size is None:
            outs[o["name"]] = np.array(o["data"], dtype=dtype).reshape(o["shape"])
            continue
        raw = body[offset:offset + size]
        if len(raw) != size:
            raise ValueError(f"output {o['name']}: {len(raw)} bytes, header says {size}")
        offset += size
        outs[o["name"]] = np.frombuffer(raw, dtype=dtype).reshape(o["shape"])
    return InferResult(status, outs, None)


def infer(base_url: str, model: str, inputs: dict, outputs: list[str], timeout: float = 120.0,
          session: requests.Session | None = None) -> InferResult:
    body, head_len = encode_request(inputs, outputs)
    post = (session or requests).post
    r = post(f"{base_url}/v2/models/{model}/infer", data=body, timeout=timeout,
             headers={"Inference-Header-Content-Length": str(head_len),
                      "Content-Type": "application/octet-stream"})
    return decode_response(r.status_code, r.content, r.headers.get("Inference-Header-Content-Length"))
