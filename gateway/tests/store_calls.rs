//! Every search is one store call whatever `k` is: a counting `Store` wrapper around the
//! real store (embedded, and OpenSearch when `OPENSEARCH_URL` is set) under the router,
//! k = 100 over 150 stored records, every search kind (region search included). The results are also held equal to
//! what the old path built from `store.get` of each hit (read separately, not counted).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use crop_core::{FaceAligner, ARCFACE_TEMPLATE_112};
use gateway::blobs::BlobStore;
use gateway::config::GatewayConfig;
use gateway::http::access::AccessControl;
use gateway::http::{app, AppState};
use gateway::inference::{
    FaceAlignment, FaceAnalysis, ImageAnalysis, Inference, InferenceError, InferenceHealth, PreprocessSettings,
    RegionAnalysis,
};
use gateway::metrics::Metrics;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use visual_store::embedded::{EmbeddedConfig, EmbeddedStore};
use visual_store::opensearch::{OpenSearchConfig, OpenSearchStore};
use visual_store::{
    FaceHit, FaceRecord, ImageHit, ImageRecord, ObjectHit, ObjectRecord, Page, PutOutcome, SearchFilter, Store,
};

const DIM: usize = 16;
const FACE_DIM: usize = 8;
const RECORDS: usize = 150;
const K: usize = 100;
const CLASSES: [(u32, &str); 3] = [(0, "person"), (16, "dog"), (2, "car")];
const BASE_TIME: i64 = 1_700_000_000;

/// A `Store` that counts the calls of each method and passes them on.
struct CountingStore {
    inner: Arc<dyn Store>,
    calls: Mutex<BTreeMap<&'static str, usize>>,
}

impl CountingStore {
    fn count(&self, method: &'static str) {
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
    }

    /// The calls since the last `take`, by method.
    fn take(&self) -> BTreeMap<&'static str, usize> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[async_trait]
impl Store for CountingStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn ready(&self) -> visual_store::Result<()> {
        self.count("ready");
        self.inner.ready().await
    }
    async fn put(&self, record: ImageRecord) -> visual_store::Result<PutOutcome> {
        self.count("put");
        self.inner.put(record).await
    }
    async fn put_batch(
        &self,
        records: Vec<ImageRecord>,
    ) -> visual_store::Result<Vec<visual_store::Result<PutOutcome>>> {
        self.count("put_batch");
        self.inner.put_batch(records).await
    }
    async fn get(&self, image_id: &str) -> visual_store::Result<Option<ImageRecord>> {
        self.count("get");
        self.inner.get(image_id).await
    }
    async fn delete(&self, image_id: &str) -> visual_store::Result<bool> {
        self.count("delete");
        self.inner.delete(image_id).await
    }
    async fn count(&self) -> visual_store::Result<usize> {
        self.count("count");
        self.inner.count().await
    }
    async fn search_images(&self, q: &[f32], f: &SearchFilter, p: Page) -> visual_store::Result<Vec<ImageHit>> {
        self.count("search_images");
        self.inner.search_images(q, f, p).await
    }
    async fn search_objects(&self, q: &[f32], f: &SearchFilter, p: Page) -> visual_store::Result<Vec<ObjectHit>> {
        self.count("search_objects");
        self.inner.search_objects(q, f, p).await
    }
    async fn search_faces(&self, q: &[f32], f: &SearchFilter, p: Page) -> visual_store::Result<Vec<FaceHit>> {
        self.count("search_faces");
        self.inner.search_faces(q, f, p).await
    }
}

#[path = "../../visual-store/examples/support/rng.rs"]
mod rng;
use rng::{normalised, Rng};

/// A random direction of `len` values, zero-padded to `DIM`.
fn random_vector(rng: &mut Rng, len: usize) -> Vec<f32> {
    let mut v = normalised((0..len).map(|_| rng.signed()).collect());
    v.resize(DIM, 0.0);
    v
}

fn records() -> Vec<ImageRecord> {
    let mut rng = Rng(3);
    (0..RECORDS)
        .map(|i| ImageRecord {
            id: format!("{i:064x}"),
            width: 300 + i as u32,
            height: 200 + 2 * i as u32,
            created_at: BASE_TIME + i as i64 * 86_400,
            tags: if i % 2 == 0 { vec!["even".into()] } else { vec!["odd".into(), format!("n{i}")] },
            metadata: json!({"n": i}),
            embedding: random_vector(&mut rng, DIM),
            objects: (0..i % 4)
                .map(|j| {
                    let (class_id, class_name) = CLASSES[(i + j) % CLASSES.len()];
                    ObjectRecord {
                        class_id,
                        class_name: class_name.into(),
                        confidence: 0.2 + 0.2 * j as f32,
                        bbox: [j as f32, 2.0, 50.0 + j as f32, 60.0],
                        embedding: random_vector(&mut rng, DIM),
                    }
                })
                .collect(),
            faces: (0..i % 3)
                .map(|j| FaceRecord {
                    confidence: 0.9,
                    bbox: [10.0 + j as f32, 10.0, 40.0, 50.0],
                    landmarks: [[20.0, 20.0]; 5],
                    embedding: random_vector(&mut rng, FACE_DIM),
                })
                .collect(),
        })
        .collect()
}

/// Triton stand-in: every text and every photo has its own deterministic embedding.
struct FixedInference;

/// preprocess's settings in the shipped model repository.
const PREPROCESS: PreprocessSettings =
    PreprocessSettings { yolo_size: 640, original_max_side: 1920, max_pixels: 100_000_000 };

fn seeded(bytes: &[u8]) -> Vec<f32> {
    random_vector(&mut Rng(bytes.iter().fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(*b as u64))), DIM)
}

#[async_trait]
impl Inference for FixedInference {
    async fn analyze_image(&self, image: Bytes) -> Result<ImageAnalysis, InferenceError> {
        Ok(ImageAnalysis { width: 10, height: 10, embedding: seeded(&image), detections: vec![] })
    }
    async fn analyze_faces(&self, _image: Bytes) -> Result<FaceAnalysis, InferenceError> {
        Ok(FaceAnalysis { width: 10, height: 10, faces: vec![] })
    }
    async fn embed_text(&self, text: &str) -> Result<Vec<f32>, InferenceError> {
        Ok(seeded(text.as_bytes()))
    }
    async fn face_alignment(&self) -> Result<FaceAlignment, InferenceError> {
        Ok(FaceAlignment {
            aligner: Arc::new(FaceAligner::new(ARCFACE_TEMPLATE_112, 112, 0.1, 1.0, 0.05).unwrap()),
            preprocess: PREPROCESS,
        })
    }
    async fn preprocess_settings(&self) -> Result<PreprocessSettings, InferenceError> {
        Ok(PREPROCESS)
    }
    /// The whole photo (10x10) at scale 64 in the 640 letterbox.
    async fn embed_region(&self, image: Bytes, letterbox_box: [f32; 4]) -> Result<RegionAnalysis, InferenceError> {
        Ok(RegionAnalysis {
            width: 10,
            height: 10,
            bbox: letterbox_box.map(|v| v / 64.0),
            embedding: Some(seeded(&image)),
        })
    }
    async fn health(&self) -> InferenceHealth {
        InferenceHealth { ready: true, server_ready: true, models: vec![], endpoints: vec![], error: None }
    }
}

async fn send(app: &Router, request: Request<Body>) -> Value {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn post_json(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri).header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())).unwrap()
}

fn post_photo(uri: &str, photo: &[u8]) -> Request<Body> {
    let mut body = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.jpg\"\r\n\r\n".to_vec();
    body.extend_from_slice(photo);
    body.extend_from_slice(b"\r\n--b--\r\n");
    Request::post(uri).header(header::CONTENT_TYPE, "multipart/form-data; boundary=b").body(Body::from(body)).unwrap()
}

/// A 10x10 PNG and one box on it, as POST /search/region takes them.
fn post_region(uri: &str, bbox: &str) -> Request<Body> {
    use image::ImageEncoder;
    let mut photo = Vec::new();
    image::codecs::png::PngEncoder::new(&mut photo)
        .write_image(&[90; 300], 10, 10, image::ExtendedColorType::Rgb8)
        .unwrap();
    let mut body = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.png\"\r\n\r\n".to_vec();
    body.extend_from_slice(&photo);
    body.extend_from_slice(
        format!("\r\n--b\r\nContent-Disposition: form-data; name=\"box\"\r\n\r\n{bbox}\r\n--b--\r\n").as_bytes(),
    );
    Request::post(uri).header(header::CONTENT_TYPE, "multipart/form-data; boundary=b").body(Body::from(body)).unwrap()
}

/// An object of a result as the old path serialised it (f32 fields, written as f32).
#[derive(serde::Serialize)]
struct ObjectJson<'a> {
    index: usize,
    class_id: u32,
    class_name: &'a str,
    confidence: f32,
    bbox: [f32; 4],
}

/// A value as it reads after going over the wire (f32 written in their shortest form).
fn wire<T: serde::Serialize>(value: &T) -> Value {
    serde_json::from_str(&serde_json::to_string(value).unwrap()).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// An image result as the old path built it from `store.get` of its id: the record's
/// size, date, tags, metadata and objects, and the allowed object with the highest dot
/// product with the query.
fn assert_image_result(result: &Value, record: &ImageRecord, query: &[f32], classes: &[&str], min_confidence: f32) {
    let objects: Vec<Value> = record
        .objects
        .iter()
        .enumerate()
        .map(|(index, o)| {
            wire(&ObjectJson {
                index,
                class_id: o.class_id,
                class_name: &o.class_name,
                confidence: o.confidence,
                bbox: o.bbox,
            })
        })
        .collect();
    let id = &record.id;
    assert_eq!(result["file_url"], json!(format!("/images/{id}/file")));
    assert_eq!(result["width"], json!(record.width), "{id}");
    assert_eq!(result["height"], json!(record.height), "{id}");
    assert_eq!(result["created_at"], json!(record.created_at), "{id}");
    assert_eq!(result["tags"], json!(record.tags), "{id}");
    assert_eq!(result["metadata"], record.metadata, "{id}");
    assert_eq!(result["objects"], json!(objects), "{id}");
    let best = record
        .objects
        .iter()
        .enumerate()
        .filter(|(_, o)| classes.is_empty() || classes.contains(&o.class_name.as_str()))
        .filter(|(_, o)| o.confidence >= min_confidence)
        .map(|(i, o)| (i, dot(&o.embedding, query)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match best {
        None => assert_eq!(result["matched_object"], Value::Null, "{id}"),
        Some((index, score)) => {
            let mut expected = objects[index].clone();
            let got = result["matched_object"].clone();
            let got_score = got["score"].as_f64().unwrap() as f32;
            assert!((got_score - score).abs() < 1e-5, "{id}: matched score {got_score} vs {score}");
            expected["score"] = got["score"].clone();
            assert_eq!(got, expected, "{id}");
        }
    }
}

async fn check_one_call_per_search(inner: Arc<dyn Store>) {
    let docs = records();
    for outcome in inner.put_batch(docs.clone()).await.unwrap() {
        assert_eq!(outcome.unwrap(), PutOutcome::Created);
    }
    let store = Arc::new(CountingStore { inner: inner.clone(), calls: Mutex::default() });
    let mut config = GatewayConfig::default();
    config.models.embedding_dim = DIM;
    config.faces.embedding_dim = FACE_DIM;
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::open(dir.path().join("photos")).unwrap();
    let access = Arc::new(AccessControl::new(&config.auth, config.server.listen).unwrap());
    let state = AppState::new(config, store.clone(), Arc::new(FixedInference), blobs, Arc::new(Metrics::new()));
    let app = app(Arc::new(state), access);
    let record = |id: &Value| docs.iter().find(|d| d.id == id.as_str().unwrap()).expect("a stored id").clone();
    let calls = |pairs: &[(&'static str, usize)]| pairs.iter().copied().collect::<BTreeMap<_, _>>();

    // text
    let body = send(
        &app,
        Request::get(format!("/search/text?q=a+red+car&k={K}&include_metadata=true")).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(store.take(), calls(&[("search_images", 1)]), "text search");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), K);
    let query = seeded(b"a red car");
    for result in results {
        let stored = inner.get(result["image_id"].as_str().unwrap()).await.unwrap().unwrap();
        assert_eq!(stored, record(&result["image_id"]));
        assert_image_result(result, &stored, &query, &[], 0.0);
    }

    // hybrid
    let hybrid = json!({"text": "dogs", "classes": ["dog", "car"], "min_confidence": 0.3,
                        "date_from": BASE_TIME, "date_to": BASE_TIME + 140 * 86_400, "k": K,
                        "include_metadata": true});
    let body = send(&app, post_json("/search/hybrid", hybrid)).await;
    assert_eq!(store.take(), calls(&[("search_images", 1)]), "hybrid search");
    let results = body["results"].as_array().unwrap();
    assert!(results.len() >= 40, "hybrid: {} results", results.len());
    let query = seeded(b"dogs");
    for result in results {
        let stored = inner.get(result["image_id"].as_str().unwrap()).await.unwrap().unwrap();
        assert_image_result(result, &stored, &query, &["dog", "car"], 0.3);
    }

    // similar, by an uploaded photo that is not stored: the only other call is the lookup
    // of the photo's own id (a stored photo is its own query), independent of k.
    let body = send(&app, post_photo(&format!("/search/similar?k={K}&include_metadata=true"), b"query photo")).await;
    assert_eq!(store.take(), calls(&[("get", 1), ("search_images", 1)]), "similar search");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), K);
    let query = seeded(b"query photo");
    for result in results {
        let stored = inner.get(result["image_id"].as_str().unwrap()).await.unwrap().unwrap();
        assert_image_result(result, &stored, &query, &[], 0.0);
    }

    // objects, by text
    let body = send(&app, post_json("/search/objects", json!({"text": "a person", "k": K}))).await;
    assert_eq!(store.take(), calls(&[("search_objects", 1)]), "object search");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), K);
    for result in results {
        let stored = inner.get(result["image_id"].as_str().unwrap()).await.unwrap().unwrap();
        let object = &stored.objects[result["object_index"].as_u64().unwrap() as usize];
        assert_eq!((&result["width"], &result["height"]), (&json!(stored.width), &json!(stored.height)));
        assert_eq!((&result["class_name"], &result["bbox"]), (&json!(object.class_name), &wire(&object.bbox)));
    }

    // objects, by a box on an uploaded photo: no lookup of the photo (any box is a new query)
    let body = send(&app, post_region(&format!("/search/region?k={K}"), "1,2,9,8")).await;
    assert_eq!(store.take(), calls(&[("search_objects", 1)]), "region search");
    assert_eq!(body["results"].as_array().unwrap().len(), K);

    // faces, by a JSON embedding
    let face_query = random_vector(&mut Rng(99), FACE_DIM)[..FACE_DIM].to_vec();
    let body = send(&app, post_json("/search/faces", json!({"embedding": face_query, "k": K}))).await;
    assert_eq!(store.take(), calls(&[("search_faces", 1)]), "face search");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), K);
    for result in results {
        let stored = inner.get(result["image_id"].as_str().unwrap()).await.unwrap().unwrap();
        let face = &stored.faces[result["face_index"].as_u64().unwrap() as usize];
        assert_eq!((&result["width"], &result["height"]), (&json!(stored.width), &json!(stored.height)));
        assert_eq!(result["bbox"], wire(&face.bbox));
    }
}

#[tokio::test]
async fn embedded_search_is_one_store_call() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig { dimension: Some(DIM), ..EmbeddedConfig::new(dir.path().join("store")) };
    check_one_call_per_search(Arc::new(EmbeddedStore::open(config).unwrap())).await;
}

#[tokio::test]
async fn opensearch_search_is_one_store_call() {
    let Ok(url) = std::env::var("OPENSEARCH_URL") else {
        test_skip::unavailable("opensearch_search_is_one_store_call", "OPENSEARCH_URL is not set");
        return;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let index = format!("gateway-store-calls-{}-{}", std::process::id(), nanos % 1_000_000);
    let store = Arc::new(OpenSearchStore::connect(OpenSearchConfig::new(&url, &index, DIM)).await.unwrap());
    let outcome = tokio::spawn(check_one_call_per_search(store.clone())).await;
    store.delete_index().await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}
