//! Request bodies for OpenSearch, as plain functions of their inputs (no I/O), each
//! unit-tested for its exact JSON. Facts they rely on (k-NN plugin 2.19, DESIGN.md s.5):
//! every vector field uses the `lucene` engine (the Maven Central k-NN zip ships no native
//! faiss/nmslib), HNSW with `cosinesimil`; a `filter` inside the `knn` query is applied
//! during the graph search (efficient filtering); nested vectors are searched through a
//! `nested` query with `score_mode: max`, and `inner_hits` names the matched parts.

use serde_json::{json, Value};

use super::IndexSettings;
use crate::{ImageRecord, SearchFilter};

/// Version of the mapping below, stored in `_meta.schema_version` and checked at start.
pub const SCHEMA_VERSION: u64 = 1;

/// Lucene's cosine score is (1 + cos) / 2; users get the cosine back.
pub fn cosine_from_score(score: f64) -> f32 {
    (2.0 * score - 1.0).clamp(-1.0, 1.0) as f32
}

fn knn_vector(dimension: usize, settings: &IndexSettings) -> Value {
    json!({
        "type": "knn_vector",
        "dimension": dimension,
        "method": {
            "name": "hnsw",
            "space_type": "cosinesimil",
            "engine": "lucene",
            "parameters": {"m": settings.m, "ef_construction": settings.ef_construction}
        }
    })
}

/// The index setting that bounds each `inner_hits` (`from + size`); OpenSearch's default is
/// 100, and a part search over more asks for more (HTTP 400 otherwise).
pub const INNER_WINDOW_SETTING: &str = "index.max_inner_result_window";

/// The inner-hits window an index needs: part searches ask each image for up to
/// `max_window` (the largest `offset + k` the store accepts) inner hits. Never below
/// OpenSearch's default.
pub fn inner_window(max_window: usize) -> usize {
    max_window.max(100)
}

/// The index's inner-hits window in a `GET <index>/_settings/<INNER_WINDOW_SETTING>` answer
/// with `flat_settings` and `include_defaults`: the set value, else the default.
pub fn inner_window_of(answer: &Value) -> Option<usize> {
    let index = answer.as_object()?.values().next()?;
    ["settings", "defaults"].into_iter().find_map(|group| match &index[group][INNER_WINDOW_SETTING] {
        Value::String(text) => text.parse().ok(),
        value => value.as_u64().map(|n| n as usize),
    })
}

/// The `PUT <index>/_settings` body that sets the inner-hits window (a dynamic setting).
pub fn inner_window_update(window: usize) -> Value {
    json!({ INNER_WINDOW_SETTING: window })
}

/// Settings and mapping of a new index. Every field is declared (`dynamic: strict`) so a
/// document can never widen the mapping silently. `max_window` is the largest `offset + k`
/// the store accepts, which sets the inner-hits window ([`inner_window`]).
pub fn create_index(dimension: usize, max_window: usize, settings: &IndexSettings) -> Value {
    let not_indexed = json!({"type": "float", "index": false});
    let knn_vector = |dimension| knn_vector(dimension, settings);
    json!({
        "settings": {"index": {"knn": true, "number_of_shards": settings.shards,
                               "number_of_replicas": settings.replicas,
                               "refresh_interval": settings.refresh_interval,
                               "max_inner_result_window": inner_window(max_window)}},
        "mappings": {
            "dynamic": "strict",
            "_meta": {"schema_version": SCHEMA_VERSION, "dimension": dimension},
            "properties": {
                "id": {"type": "keyword"},
                "width": {"type": "integer", "index": false},
                "height": {"type": "integer", "index": false},
                "created_at": {"type": "long"},
                "tags": {"type": "keyword"},
                "metadata": {"type": "object", "enabled": false},
                "embedding": knn_vector(dimension),
                "objects": {
                    "type": "nested",
                    "properties": {
                        "class_id": {"type": "integer"},
                        "created_at": {"type": "long"},
                        "tags": {"type": "keyword"},
                        "class_name": {"type": "keyword"},
                        "confidence": {"type": "float"},
                        "bbox": not_indexed,
                        "embedding": knn_vector(dimension)
                    }
                },
                "faces": {
                    "type": "nested",
                    "properties": {
                        "confidence": {"type": "float"},
                        "bbox": not_indexed,
                        "landmarks": not_indexed,
                        "embedding": knn_vector(dimension)
                    }
                }
            }
        }
    })
}

/// Checks the `_meta` of an existing index's mapping; `Err` says what differs.
pub fn check_mapping_meta(meta: Option<&Value>, dimension: usize) -> Result<(), String> {
    let version = meta.and_then(|m| m.get("schema_version")).and_then(Value::as_u64);
    let stored_dimension = meta.and_then(|m| m.get("dimension")).and_then(Value::as_u64);
    match (version, stored_dimension) {
        (Some(SCHEMA_VERSION), Some(d)) if d as usize == dimension => Ok(()),
        (Some(SCHEMA_VERSION), Some(d)) => {
            Err(format!("the index holds {d}-dimensional vectors, configured for {dimension}"))
        }
        (Some(v), _) => {
            Err(format!("the index has mapping schema_version {v}, this build writes version {SCHEMA_VERSION}"))
        }
        (None, _) => Err("the index has no _meta.schema_version: it was not created by this store".into()),
    }
}

/// The document stored for a record: the record itself (field names match the mapping),
/// with the image's `created_at` and `tags` copied into each object. A nested k-NN filter
/// may test parent fields or nested fields but not both at once (k-NN 2.19 then matches
/// nothing, verified on a node), so object search filters on the copies alone. Reading the
/// record back ignores the copies.
pub fn document(record: &ImageRecord) -> Value {
    let mut document = serde_json::to_value(record).expect("an ImageRecord always serialises");
    for object in document["objects"].as_array_mut().into_iter().flatten() {
        object["created_at"] = json!(record.created_at);
        object["tags"] = json!(record.tags);
    }
    document
}

fn object_condition_active(filter: &SearchFilter) -> bool {
    !filter.classes.is_empty() || filter.min_confidence > 0.0
}

/// Clauses on one object (field names under `objects.`).
fn object_clauses(filter: &SearchFilter) -> Vec<Value> {
    let mut clauses = Vec::new();
    if !filter.classes.is_empty() {
        clauses.push(json!({"terms": {"objects.class_name": filter.classes}}));
    }
    if filter.min_confidence > 0.0 {
        clauses.push(json!({"range": {"objects.confidence": {"gte": filter.min_confidence}}}));
    }
    clauses
}

/// Clauses on the image's date range and tags; `prefix` is "" for the image's own fields
/// or "objects." for the copies on each object.
fn image_clauses(filter: &SearchFilter, prefix: &str) -> Vec<Value> {
    let mut clauses = Vec::new();
    if filter.created_from.is_some() || filter.created_to.is_some() {
        let mut range = serde_json::Map::new();
        if let Some(from) = filter.created_from {
            range.insert("gte".into(), from.into());
        }
        if let Some(to) = filter.created_to {
            range.insert("lte".into(), to.into());
        }
        clauses.push(json!({"range": {format!("{prefix}created_at"): range}}));
    }
    clauses.extend(filter.tags.iter().map(|tag| json!({"term": {format!("{prefix}tags"): tag}})));
    clauses
}

fn bool_filter(clauses: Vec<Value>) -> Option<Value> {
    (!clauses.is_empty()).then(|| json!({"bool": {"filter": clauses}}))
}

/// The filter of an image (or face) search: image clauses plus "has a matching object".
pub fn image_filter(filter: &SearchFilter) -> Option<Value> {
    let mut clauses = image_clauses(filter, "");
    if object_condition_active(filter) {
        let object = bool_filter(object_clauses(filter)).unwrap_or_else(|| json!({"match_all": {}}));
        clauses.push(json!({"nested": {"path": "objects", "query": object}}));
    }
    bool_filter(clauses)
}

fn knn(field: &str, vector: &[f32], k: usize, filter: Option<Value>) -> Value {
    let mut body = json!({"vector": vector, "k": k});
    if let Some(filter) = filter {
        body["filter"] = filter;
    }
    json!({"knn": {field: body}})
}

/// What an image hit returns of its document: everything but the vectors (and the copies
/// of the image's date and tags on each object).
pub const IMAGE_SOURCE: [&str; 9] = [
    "width",
    "height",
    "created_at",
    "tags",
    "metadata",
    "objects.class_id",
    "objects.class_name",
    "objects.confidence",
    "objects.bbox",
];

/// Name of the inner hits that carry an image hit's matched object.
pub const MATCHED_OBJECT: &str = "matched_object";

/// Score of the matched-object script: 1 + cosine (a script score must not be negative).
const MATCHED_OBJECT_SCRIPT: &str = "1.0 + cosineSimilarity(params.query_value, doc[params.field])";

/// The best allowed object of each image hit (`crate::matching`): a nested query whose
/// single inner hit is the object with the highest exact cosine (k-NN's painless
/// `cosineSimilarity` over `objects.embedding`) among the filter's classes and confidence.
/// It sits in a `should` next to `match_all` inside a `filter`: it never changes which
/// images match nor their scores, and inner hits are scored on their own.
fn matched_object(vector: &[f32], filter: &SearchFilter) -> Value {
    let mut clauses = Vec::new();
    if !filter.classes.is_empty() {
        clauses.push(json!({"terms": {"objects.class_name": filter.classes}}));
    }
    clauses.push(json!({"range": {"objects.confidence": {"gte": filter.min_confidence}}}));
    json!({"bool": {"should": [
        {"nested": {
            "path": "objects",
            "query": {"script_score": {
                "query": {"bool": {"filter": clauses}},
                "script": {
                    "source": MATCHED_OBJECT_SCRIPT,
                    "params": {"field": "objects.embedding", "query_value": vector}
                }
            }},
            "inner_hits": {"name": MATCHED_OBJECT, "size": 1, "_source": false}
        }},
        {"match_all": {}}
    ]}})
}

/// The cosine of a matched-object inner hit's score (1 + cosine).
pub fn cosine_from_script_score(score: f64) -> f32 {
    (score - 1.0).clamp(-1.0, 1.0) as f32
}

/// Ranks `offset .. offset + k` of the images nearest to `vector`, each with its
/// document minus vectors and its matched object. The k-NN query collects at least
/// `ef_search` candidates (Lucene's HNSW search uses `k` as its candidate list, so a small
/// `k` alone gives poor recall); `size` then cuts the page.
pub fn search_images(vector: &[f32], filter: &SearchFilter, k: usize, offset: usize, ef_search: usize) -> Value {
    json!({
        "size": k,
        "from": offset,
        "_source": {"includes": IMAGE_SOURCE},
        "query": {"bool": {
            "must": [knn("embedding", vector, (k + offset).max(ef_search), image_filter(filter))],
            "filter": [matched_object(vector, filter)]
        }}
    })
}

/// Nested search over one part kind (`objects` or `faces`). Inner hits return `_source`
/// (doc values would sort the four bbox numbers) and `_nested.offset`, the part's index.
/// Each image hit carries its
/// best `window` parts as inner hits (`expand_nested_docs` scores every part, not just the
/// best); the caller ranks the parts, so an image holding two of the top parts yields both.
/// `window` images suffice: the top `window` parts lie in at most that many images, each
/// of which ranks at least as high as its best part.
fn search_parts(path: &str, vector: &[f32], part_filter: Option<Value>, window: Window, fields: &[&str]) -> Value {
    let Window { size: window, ef_search } = window;
    let mut knn_query = knn(&format!("{path}.embedding"), vector, window.max(ef_search), part_filter);
    knn_query["knn"][format!("{path}.embedding")]["expand_nested_docs"] = json!(true);
    json!({
        "size": window,
        "_source": {"includes": ["width", "height"]},
        "query": {
            "nested": {
                "path": path,
                "score_mode": "max",
                "query": knn_query,
                "inner_hits": {
                    "size": window,
                    "_source": {"includes": fields.iter().map(|f| format!("{path}.{f}")).collect::<Vec<_>>()}
                }
            }
        }
    })
}

/// Object search: every clause on the object (the image's date and tags via their copies).
pub fn search_objects(vector: &[f32], filter: &SearchFilter, window: usize, ef_search: usize) -> Value {
    let mut clauses = image_clauses(filter, "objects.");
    clauses.extend(object_clauses(filter));
    let window = Window { size: window, ef_search };
    search_parts("objects", vector, bool_filter(clauses), window, &["class_name", "confidence", "bbox"])
}

/// Face search: the image filter applies to the face's image.
pub fn search_faces(vector: &[f32], filter: &SearchFilter, window: usize, ef_search: usize) -> Value {
    search_parts("faces", vector, image_filter(filter), Window { size: window, ef_search }, &["bbox"])
}

/// How many parts a part search returns, and the fewest candidates its k-NN collects.
struct Window {
    size: usize,
    ef_search: usize,
}

/// `_bulk` body (NDJSON lines): one `create` per record, so an existing id answers 409
/// and is left unchanged (idempotent put).
pub fn bulk_create(index: &str, records: &[ImageRecord]) -> Vec<Value> {
    records
        .iter()
        .flat_map(|record| [json!({"create": {"_index": index, "_id": record.id}}), document(record)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hybrid() -> SearchFilter {
        SearchFilter {
            classes: vec!["dog".into()],
            min_confidence: 0.5,
            created_from: Some(10),
            created_to: Some(20),
            tags: vec!["beach".into(), "sun".into()],
        }
    }

    #[test]
    fn index_mapping_is_lucene_hnsw_cosine_everywhere() {
        let settings = IndexSettings {
            shards: 3,
            replicas: 2,
            m: 24,
            ef_construction: 200,
            ef_search: 150,
            refresh_interval: "5s".into(),
        };
        let body = create_index(4, 10_000, &settings);
        assert_eq!(
            body["settings"]["index"],
            json!({"knn": true, "number_of_shards": 3, "number_of_replicas": 2, "refresh_interval": "5s",
                   "max_inner_result_window": 10_000})
        );
        assert_eq!(body["mappings"]["_meta"], json!({"schema_version": 1, "dimension": 4}));
        let expected = json!({
            "type": "knn_vector", "dimension": 4,
            "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene", "parameters": {"m": 24, "ef_construction": 200}}
        });
        let properties = &body["mappings"]["properties"];
        assert_eq!(properties["embedding"], expected);
        assert_eq!(properties["objects"]["type"], "nested");
        assert_eq!(properties["objects"]["properties"]["embedding"], expected);
        assert_eq!(properties["faces"]["properties"]["embedding"], expected);
        assert_eq!(properties["metadata"], json!({"type": "object", "enabled": false}));
    }

    #[test]
    fn inner_window_is_read_from_settings_or_defaults() {
        assert_eq!(inner_window(10_000), 10_000);
        assert_eq!(inner_window(20), 100);
        let set = json!({"idx": {"settings": {"index.max_inner_result_window": "600"}, "defaults": {}}});
        assert_eq!(inner_window_of(&set), Some(600));
        let default = json!({"idx": {"settings": {}, "defaults": {"index.max_inner_result_window": "100"}}});
        assert_eq!(inner_window_of(&default), Some(100));
        assert_eq!(inner_window_of(&json!({"idx": {"settings": {}}})), None);
        assert_eq!(inner_window_update(600), json!({"index.max_inner_result_window": 600}));
    }

    #[test]
    fn mapping_meta_mismatch_is_explained() {
        assert!(check_mapping_meta(Some(&json!({"schema_version": 1, "dimension": 4})), 4).is_ok());
        assert!(check_mapping_meta(Some(&json!({"schema_version": 1, "dimension": 4})), 8)
            .unwrap_err()
            .contains("4-dimensional"));
        assert!(check_mapping_meta(Some(&json!({"schema_version": 9, "dimension": 4})), 4)
            .unwrap_err()
            .contains("schema_version 9"));
        assert!(check_mapping_meta(None, 4).unwrap_err().contains("not created by this store"));
    }

    #[test]
    fn image_search_puts_the_filter_inside_knn() {
        let body = search_images(&[0.5, 1.0], &hybrid(), 10, 20, 100);
        assert_eq!(
            body,
            json!({
                "size": 10, "from": 20,
                "_source": {"includes": ["width", "height", "created_at", "tags", "metadata", "objects.class_id",
                                         "objects.class_name", "objects.confidence", "objects.bbox"]},
                "query": {"bool": {
                    "must": [{"knn": {"embedding": {
                        "vector": [0.5, 1.0], "k": 100,
                        "filter": {"bool": {"filter": [
                            {"range": {"created_at": {"gte": 10, "lte": 20}}},
                            {"term": {"tags": "beach"}},
                            {"term": {"tags": "sun"}},
                            {"nested": {"path": "objects", "query": {"bool": {"filter": [
                                {"terms": {"objects.class_name": ["dog"]}},
                                {"range": {"objects.confidence": {"gte": 0.5}}}
                            ]}}}}
                        ]}}
                    }}}],
                    "filter": [{"bool": {"should": [
                        {"nested": {
                            "path": "objects",
                            "query": {"script_score": {
                                "query": {"bool": {"filter": [
                                    {"terms": {"objects.class_name": ["dog"]}},
                                    {"range": {"objects.confidence": {"gte": 0.5}}}
                                ]}},
                                "script": {
                                    "source": "1.0 + cosineSimilarity(params.query_value, doc[params.field])",
                                    "params": {"field": "objects.embedding", "query_value": [0.5, 1.0]}
                                }
                            }},
                            "inner_hits": {"name": "matched_object", "size": 1, "_source": false}
                        }},
                        {"match_all": {}}
                    ]}}]
                }}
            })
        );
        let unfiltered = search_images(&[1.0], &SearchFilter::default(), 5, 0, 40);
        assert_eq!(unfiltered["query"]["bool"]["must"], json!([{"knn": {"embedding": {"vector": [1.0], "k": 40}}}]));
        // A page deeper than ef_search collects the whole page.
        let deep = search_images(&[1.0], &SearchFilter::default(), 30, 20, 40);
        assert_eq!(deep["query"]["bool"]["must"][0]["knn"]["embedding"]["k"], json!(50));
        let any_object = &unfiltered["query"]["bool"]["filter"][0]["bool"]["should"][0]["nested"]["query"];
        assert_eq!(
            any_object["script_score"]["query"],
            json!({"bool": {"filter": [{"range": {"objects.confidence": {"gte": 0.0}}}]}})
        );
    }

    #[test]
    fn object_search_is_nested_knn_with_inner_hits() {
        let body = search_objects(&[1.0], &hybrid(), 8, 100);
        assert_eq!(
            body,
            json!({
                "size": 8, "_source": {"includes": ["width", "height"]},
                "query": {"nested": {
                    "path": "objects", "score_mode": "max",
                    "query": {"knn": {"objects.embedding": {
                        "vector": [1.0], "k": 100, "expand_nested_docs": true,
                        "filter": {"bool": {"filter": [
                            {"range": {"objects.created_at": {"gte": 10, "lte": 20}}},
                            {"term": {"objects.tags": "beach"}},
                            {"term": {"objects.tags": "sun"}},
                            {"terms": {"objects.class_name": ["dog"]}},
                            {"range": {"objects.confidence": {"gte": 0.5}}}
                        ]}}
                    }}},
                    "inner_hits": {"size": 8, "_source": {"includes": ["objects.class_name", "objects.confidence", "objects.bbox"]}}
                }}
            })
        );
    }

    #[test]
    fn bulk_uses_create_so_existing_ids_are_kept() {
        let record: ImageRecord = serde_json::from_value(json!({
            "id": "a", "width": 1, "height": 2, "created_at": 3, "tags": [], "metadata": {},
            "embedding": [1.0], "objects": [], "faces": []
        }))
        .unwrap();
        let lines = bulk_create("images", &[record]);
        assert_eq!(lines[0], json!({"create": {"_index": "images", "_id": "a"}}));
        assert_eq!(lines[1]["embedding"], json!([1.0]));
    }

    #[test]
    fn objects_carry_their_images_date_and_tags() {
        let record: ImageRecord = serde_json::from_value(json!({
            "id": "a", "width": 1, "height": 2, "created_at": 3, "tags": ["x"], "metadata": {},
            "embedding": [1.0], "faces": [],
            "objects": [{"class_id": 0, "class_name": "dog", "confidence": 0.5, "bbox": [0.0, 0.0, 1.0, 1.0], "embedding": [1.0]}]
        }))
        .unwrap();
        let document = document(&record);
        assert_eq!(document["objects"][0]["created_at"], json!(3));
        assert_eq!(document["objects"][0]["tags"], json!(["x"]));
        assert_eq!(serde_json::from_value::<ImageRecord>(document).unwrap(), record);
    }

    #[test]
    fn score_converts_to_cosine() {
        assert_eq!(cosine_from_score(1.0), 1.0);
        assert_eq!(cosine_from_score(0.5), 0.0);
        assert_eq!(cosine_from_score(0.0), -1.0);
        assert_eq!(cosine_from_script_score(1.5), 0.5);
        assert_eq!(cosine_from_script_score(0.0), -1.0);
    }
}
