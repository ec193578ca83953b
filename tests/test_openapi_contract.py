"""The live gateway against its own OpenAPI document, with a property-based API tester.

The document at /openapi.json is generated from the Rust request and response types
(utoipa), so this checks the generated contract, not a copy: schemathesis (PyPI, pinned
in scripts/requirements-test.txt) generates requests from it, valid and invalid, for every
operation, and fails on any 5xx, any status code the document does not list, and any
response whose content type or body does not match its schema.

The gateway is its own (a data dir of its own, faces indexed, a few real photos stored so
searches return hits whose schemas are checked), so nothing the tester ingests or deletes
reaches the other tests. A second, tiny run against a deliberately wrong copy of the
document must fail: proof that the checks run.
"""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import requests

from test_gateway import Gateway, _load_models, photo_paths, read_bytes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMATHESIS = os.path.join(REPO_ROOT, ".venv", "bin", "st")
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# Bounded: examples per operation and a time budget for the whole run (docs/testing.md).
MAX_EXAMPLES = 12
MAX_TIME_S = 150
STORED_PHOTOS = 4


@pytest.fixture(scope="module")
def contract_gateway(triton, tmp_path_factory):
    _load_models(triton)
    server = Gateway(str(tmp_path_factory.mktemp("contract-data")), triton.grpc_address,
                     extra_args=("--index-faces", "true")).start()
    for path in photo_paths()[:STORED_PHOTOS]:
        r = server.post("/ingest", files={"image": (os.path.basename(path), read_bytes(path), "image/jpeg")})
        assert r.status_code == 201, r.text
    yield server
    server.stop()


def schemathesis(location: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    # One worker: with two, hypothesis described strategies (ast.parse of lambda sources) in two
    # threads at once and CPython 3.11 raised "SystemError: AST constructor recursion depth
    # mismatch" inside schemathesis (its AST state is per interpreter, not per thread).
    command = [SCHEMATHESIS, "run", location, "--checks", CHECKS, "--seed", "20261204", "--no-shrink",
               "--request-timeout", "60", "--workers", "1", *args]
    # From .cache (git-ignored): schemathesis keeps its replay data in the working folder.
    cache = os.path.join(REPO_ROOT, ".cache")
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cache)


def test_live_service_matches_its_openapi_document(contract_gateway):
    result = schemathesis(f"{contract_gateway.url}/openapi.json", "--phases", "examples,coverage,fuzzing",
                          "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_TIME_S),
                          timeout=MAX_TIME_S + 240)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, f"schemathesis found contract violations:\n{report}"
    # Every operation of the document was exercised, none filtered out.
    assert re.search(r"Operations:\s+(\d+) selected / \1 total", result.stdout), report
    # The gateway kept serving through every generated request.
    assert contract_gateway.get("/health").status_code == 200


def test_a_wrong_document_is_caught(contract_gateway, tmp_path):
    document = requests.get(f"{contract_gateway.url}/openapi.json", timeout=10).json()
    health = document["components"]["schemas"]["HealthResponse"]
    health["properties"]["status"] = {"type": "string", "enum": ["not what the service answers"]}
    wrong = tmp_path / "wrong-openapi.json"
    wrong.write_text(json.dumps(document))
    result = schemathesis(str(wrong), "--url", contract_gateway.url, "--include-path", "/health",
                          "--phases", "examples,fuzzing", "--max-examples", "3", timeout=180)
    assert result.returncode != 0, result.stdout[-3000:]
    assert "Response violates schema" in result.stdout, result.stdout[-3000:]
