"""Smoke test of the OpenSearch node (scripts/serverctl/opensearch.py): k-NN works as the store needs.

On one index shaped like the store's (a global knn_vector plus nested objects, each with
its own knn_vector and class), with the lucene engine because the k-NN zip from Maven
Central carries no native faiss/nmslib libraries (docs/opensearch.md):
exact top hit, score -> cosine conversion, efficient filtering, nested k-NN with inner hits.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest

DIM = 8
N_DOCS = 200
# Few enough that post-filtering the top k would lose most of them; more than K.
N_RARE = 12
K = 10
CLASSES = ["cat", "dog", "car"]


def knn_vector_mapping() -> dict:
    return {"type": "knn_vector", "dimension": DIM,
            "method": {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil",
                       "parameters": {"m": 16, "ef_construction": 100}}}


def request(url: str, method: str = "GET", body=None, ndjson: bool = False) -> dict:
    if ndjson:
        data = "".join(json.dumps(line) + "\n" for line in body).encode()
        content_type = "application/x-ndjson"
    else:
        data = None if body is None else json.dumps(body).encode()
        content_type = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {url} -> {e.code}: {e.read().decode(errors='replace')}") from None


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (b @ a) / (np.linalg.norm(b, axis=-1) * np.linalg.norm(a))


def score_to_cosine(score: float) -> float:
    # Lucene's cosine similarity scores (1 + cos) / 2.
    return 2.0 * score - 1.0


@pytest.fixture(scope="module")
def corpus(opensearch_url):
    rng = np.random.default_rng(1234)
    vectors = rng.standard_normal((N_DOCS, DIM)).astype(np.float32)
    groups = ["rare" if i < N_RARE else "common" for i in range(N_DOCS)]
    objects = []
    for i in range(N_DOCS):
        n = 1 + i % 3
        objects.append([{"embedding": rng.standard_normal(DIM).astype(np.float32),
                         "class": CLASSES[(i + j) % len(CLASSES)]} for j in range(n)])
    index = f"{opensearch_url}/knn-smoke-{uuid.uuid4().hex[:8]}"
    request(index, "PUT", {
        "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
        "mappings": {"properties": {
            "embedding": knn_vector_mapping(),
            "group": {"type": "keyword"},
            "objects": {"type": "nested", "properties": {
                "embedding": knn_vector_mapping(),
                "class": {"type": "keyword"}}},
        }},
    })
    lines = []
    for i in range(N_DOCS):
        lines.append({"index": {"_id": str(i)}})
        lines.append({"embedding": vectors[i].tolist(), "group": groups[i],
                      "objects": [{"embedding": o["embedding"].tolist(), "class": o["class"]}
                                  for o in objects[i]]})
    result = request(f"{index}/_bulk?refresh=true", "POST", lines, ndjson=True)
    assert not result["errors"], [item for item in result["items"] if "error" in item["index"]][:3]
    yield {"index": index, "vectors": vectors, "groups": groups, "objects": objects, "rng": rng}
    request(index, "DELETE")


def search(corpus, body: dict) -> list[dict]:
    return request(f"{corpus['index']}/_search", "POST", body)["hits"]["hits"]


def test_top_hit_is_exact_nearest_and_scores_convert_to_cosine(corpus):
    vectors = corpus["vectors"]
    for _ in range(5):
        query = corpus["rng"].standard_normal(DIM).astype(np.float32)
        true_cos = cosine(query, vectors)
        hits = search(corpus, {"size": K, "query": {"knn": {"embedding": {"vector": query.tolist(), "k": K}}}})
        assert len(hits) == K
        assert int(hits[0]["_id"]) == int(np.argmax(true_cos))
        for hit in hits:
            assert score_to_cosine(hit["_score"]) == pytest.approx(true_cos[int(hit["_id"])], abs=1e-4)


def test_efficient_filter_returns_k_when_k_match(corpus):
    vectors, groups = corpus["vectors"], corpus["groups"]
    rare = np.array([g == "rare" for g in groups])
    query = corpus["rng"].standard_normal(DIM).astype(np.float32)
    hits = search(corpus, {"size": K, "query": {"knn": {"embedding": {
        "vector": query.tolist(), "k": K, "filter": {"term": {"group": "rare"}}}}}})
    # Post-filtering the global top K would keep about K * N_RARE / N_DOCS of them.
    assert len(hits) == K
    assert all(groups[int(h["_id"])] == "rare" for h in hits)
    true_cos = np.where(rare, cosine(query, vectors), -np.inf)
    assert int(hits[0]["_id"]) == int(np.argmax(true_cos))


def test_nested_knn_returns_matched_object(corpus):
    # The query is one object's own vector, so that object is the exact nearest (cos 1).
    doc, offset = 37, 1
    target = corpus["objects"][doc][offset]
    hits = search(corpus, {"size": K, "query": {"nested": {
        "path": "objects", "score_mode": "max",
        "query": {"knn": {"objects.embedding": {"vector": target["embedding"].tolist(), "k": K}}},
        "inner_hits": {"size": 1, "_source": ["objects.class"]}}}})
    assert int(hits[0]["_id"]) == doc
    assert score_to_cosine(hits[0]["_score"]) == pytest.approx(1.0, abs=1e-4)
    inner = hits[0]["inner_hits"]["objects"]["hits"]["hits"]
    assert inner[0]["_nested"] == {"field": "objects", "offset": offset}
    assert inner[0]["_source"]["class"] == target["class"]
    # Each parent's score is its best object's cosine (score_mode max).
    for hit in hits:
        best = max(cosine(target["embedding"], o["embedding"][None, :])[0] for o in corpus["objects"][int(hit["_id"])])
        assert score_to_cosine(hit["_score"]) == pytest.approx(best, abs=1e-4)
