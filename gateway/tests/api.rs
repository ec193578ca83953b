//! The router end to end through `oneshot`, with the real embedded store in a temporary
//! folder and a scripted `Inference` in place of Triton: status codes, JSON error bodies,
//! idempotent ingest, filters, pagination limits, the face endpoints and the OpenAPI
//! document.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use crop_core::{FaceAligner, ARCFACE_TEMPLATE_112};
use gateway::blobs::{content_id, BlobStore};
use gateway::config::GatewayConfig;
use gateway::http::access::{policy, AccessControl};
use gateway::http::{app, AppState};
use gateway::inference::{
    DetectedFace, Detection, FaceAlignment, FaceAnalysis, ImageAnalysis, Inference, InferenceError, InferenceHealth,
    PreprocessSettings, RegionAnalysis,
};
use gateway::metrics::Metrics;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use triton_client::ClientError;
use visual_store::embedded::{EmbeddedConfig, EmbeddedStore};
use visual_store::Store;

const DIM: usize = 8;
const FACE_DIM: usize = 4;
const JPEG_MAGIC: [u8; 3] = [0xFF, 0xD8, 0xFF];
const PNG_MAGIC: [u8; 4] = [0x89, b'P', b'N', b'G'];
const FACE_SHIFT: [u32; 2] = [40, 25];

/// Triton stand-in: a "photo" is JPEG magic + a seed byte; its embedding is a one-hot-ish
/// vector of the seed; even seeds hold a person (0.9), odd seeds a dog (0.6). Even seeds
/// also hold a face (embedding: the seed's FACE_DIM vector) and, from seed 4 on, a second
/// face whose landmarks face_align rejected. A real PNG (`face_photo`) holds a face whose
/// landmarks are the ArcFace template moved by `FACE_SHIFT`, and a rejected one.
#[derive(Default)]
struct ScriptedInference {
    image_calls: AtomicUsize,
    face_calls: AtomicUsize,
    text_calls: AtomicUsize,
    region_calls: AtomicUsize,
    unavailable: AtomicBool,
    /// The region model answers with a box 2 pixels right of the one asked for.
    region_misplaced: AtomicBool,
}

/// preprocess's settings in the shipped model repository.
const PREPROCESS: PreprocessSettings =
    PreprocessSettings { yolo_size: 640, original_max_side: 1920, max_pixels: 100_000_000 };

fn seed_vector(seed: u8) -> Vec<f32> {
    let mut v = [0.1; DIM];
    v[seed as usize % DIM] = 1.0;
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

fn face_vector(seed: u8) -> Vec<f32> {
    let mut v = [0.2; FACE_DIM];
    v[seed as usize / 2 % FACE_DIM] = 1.0;
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

fn decode_error() -> InferenceError {
    ClientError::Rejected {
        method: "ModelInfer",
        model: "visual_ingest".into(),
        code: "InvalidArgument".into(),
        message: "preprocess: cannot decode the image".into(),
    }
    .into()
}

const FACE_PHOTO_SIZE: (u32, u32) = (200, 160);

/// A real PNG photo, `FACE_PHOTO_SIZE`, and its pixels (RGB8, row-major).
fn face_photo() -> (Vec<u8>, Vec<u8>) {
    use image::ImageEncoder;
    let (width, height) = FACE_PHOTO_SIZE;
    let pixels: Vec<u8> = (0..width * height * 3).map(|i| (i * 7919 % 251) as u8).collect();
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&pixels, width, height, image::ExtendedColorType::Rgb8)
        .unwrap();
    (png, pixels)
}

fn photo(seed: u8) -> Vec<u8> {
    let mut bytes = JPEG_MAGIC.to_vec();
    bytes.push(seed);
    bytes
}

#[async_trait]
impl Inference for ScriptedInference {
    async fn analyze_image(&self, image: Bytes) -> Result<ImageAnalysis, InferenceError> {
        self.image_calls.fetch_add(1, Ordering::SeqCst);
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(ClientError::Unavailable {
                endpoint: "http://127.0.0.1:1".into(),
                method: "ModelInfer",
                attempts: 4,
                message: "connection refused".into(),
            }
            .into());
        }
        if !image.starts_with(&JPEG_MAGIC) || image.len() < 4 {
            return Err(decode_error());
        }
        let seed = image[3];
        let (class_id, confidence) = if seed.is_multiple_of(2) { (0, 0.9) } else { (16, 0.6) };
        Ok(ImageAnalysis {
            width: 640,
            height: 480,
            embedding: seed_vector(seed),
            detections: vec![Detection {
                class_id,
                confidence,
                bbox: [10.0, 20.0, 110.0, 220.0],
                embedding: seed_vector(seed.wrapping_add(1)),
            }],
        })
    }

    async fn analyze_faces(&self, image: Bytes) -> Result<FaceAnalysis, InferenceError> {
        self.face_calls.fetch_add(1, Ordering::SeqCst);
        let face = |score, embedding: Option<Vec<f32>>, landmarks: [[f32; 2]; 5]| DetectedFace {
            score,
            bbox: [30.0, 40.0, 90.0, 120.0],
            detector_bbox: [30.0, 40.0, 90.0, 120.0],
            landmarks,
            detector_landmarks: landmarks,
            // the encoder's output is not unit length; the fake's is twice the normalised one
            raw_embedding: embedding.as_ref().map(|unit| unit.iter().map(|v| v * 2.0).collect()),
            embedding,
        };
        let rejected = face(0.7, None, [[50.0, 60.0]; 5]);
        if image.starts_with(&PNG_MAGIC) {
            let shifted = ARCFACE_TEMPLATE_112.map(|[x, y]| [x + FACE_SHIFT[0] as f32, y + FACE_SHIFT[1] as f32]);
            let (width, height) = FACE_PHOTO_SIZE;
            return Ok(FaceAnalysis { width, height, faces: vec![face(0.9, Some(face_vector(0)), shifted), rejected] });
        }
        if !image.starts_with(&JPEG_MAGIC) || image.len() < 4 {
            return Err(decode_error());
        }
        let seed = image[3];
        let face = |score, embedding| face(score, embedding, [[50.0, 60.0]; 5]);
        let faces = match (seed % 2, seed >= 4) {
            (0, false) => vec![face(0.9, Some(face_vector(seed)))],
            (0, true) => vec![face(0.9, Some(face_vector(seed))), rejected],
            _ => vec![],
        };
        Ok(FaceAnalysis { width: 640, height: 480, faces })
    }

    async fn embed_text(&self, text: &str) -> Result<Vec<f32>, InferenceError> {
        self.text_calls.fetch_add(1, Ordering::SeqCst);
        Ok(seed_vector(text.len() as u8))
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

    /// Only the real PNG (`face_photo`, 200x160): in the 640 letterbox it is scaled by 3.2
    /// with 64 rows of padding above, which box_embed undoes; its crop embeds as the object
    /// of photo(3). A box under 1 pixel is rejected, as box_embed's min_box_size does.
    async fn embed_region(&self, image: Bytes, letterbox_box: [f32; 4]) -> Result<RegionAnalysis, InferenceError> {
        self.region_calls.fetch_add(1, Ordering::SeqCst);
        if !image.starts_with(&PNG_MAGIC) {
            return Err(decode_error());
        }
        let shift = if self.region_misplaced.load(Ordering::SeqCst) { 2.0 } else { 0.0 };
        let [x1, y1, x2, y2] = letterbox_box;
        let bbox = [x1 / 3.2 + shift, (y1 - 64.0) / 3.2, x2 / 3.2 + shift, (y2 - 64.0) / 3.2];
        let embedding = (bbox[2] - bbox[0] >= 1.0 && bbox[3] - bbox[1] >= 1.0).then(|| seed_vector(4));
        let (width, height) = FACE_PHOTO_SIZE;
        Ok(RegionAnalysis { width, height, bbox, embedding })
    }

    async fn health(&self) -> InferenceHealth {
        InferenceHealth {
            ready: !self.unavailable.load(Ordering::SeqCst),
            server_ready: true,
            models: vec![],
            endpoints: vec![],
            error: None,
        }
    }
}

struct Harness {
    app: Router,
    inference: Arc<ScriptedInference>,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    harness_with(|_| {})
}

fn harness_with(configure: impl FnOnce(&mut GatewayConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = GatewayConfig::default();
    config.models.embedding_dim = DIM;
    config.faces.embedding_dim = FACE_DIM;
    config.server.max_request_bytes = 64 * 1024;
    configure(&mut config);
    let store_config = EmbeddedConfig { dimension: Some(DIM), ..EmbeddedConfig::new(dir.path().join("store")) };
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(store_config).unwrap());
    let inference = Arc::new(ScriptedInference::default());
    let blobs = BlobStore::open(dir.path().join("photos")).unwrap();
    let access = Arc::new(AccessControl::new(&config.auth, config.server.listen).unwrap());
    let state = AppState::new(config, store.clone(), inference.clone(), blobs, Arc::new(Metrics::new()));
    Harness { app: app(Arc::new(state), access), inference, store, _dir: dir }
}

const BOUNDARY: &str = "gatewaytestboundary";

/// A multipart body: (field name, optional filename, bytes).
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value =
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn post_json(&self, uri: &str, body: &str) -> (StatusCode, Value) {
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        self.send(request).await
    }

    async fn post_form(&self, uri: &str, parts: &[(&str, Option<&str>, &[u8])]) -> (StatusCode, Value) {
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"))
            .body(Body::from(multipart(parts)))
            .unwrap();
        self.send(request).await
    }

    async fn ingest(&self, seed: u8, extra: &[(&str, Option<&str>, &[u8])]) -> (StatusCode, Value) {
        let image = photo(seed);
        let mut parts = vec![("image", Some("p.jpg"), image.as_slice())];
        parts.extend_from_slice(extra);
        self.post_form("/ingest", &parts).await
    }

    async fn count(&self) -> usize {
        self.store.count().await.unwrap()
    }
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, needle: &str) {
    assert_eq!(status, expected, "{body}");
    let message = body["error"].as_str().unwrap_or_else(|| panic!("no JSON error in {body}"));
    assert!(message.contains(needle), "{message:?} should mention {needle:?}");
}

#[tokio::test]
async fn ingest_is_idempotent_and_stores_the_photo() {
    let h = harness();
    let (status, body) = h
        .ingest(
            2,
            &[
                ("tags", None, b"beach, dog"),
                ("metadata", None, br#"{"camera":"x"}"#),
                ("created_at", None, b"2024-01-02"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(id, content_id(&photo(2)));
    assert_eq!(body["objects"], 1);

    let (status, body) = h.ingest(2, &[]).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("already_stored")));
    assert_eq!(h.inference.image_calls.load(Ordering::SeqCst), 1, "re-ingest must not call Triton");

    let (status, record) = h.get(&format!("/images/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["tags"], json!(["beach", "dog"]));
    assert_eq!(record["metadata"]["camera"], "x");
    assert_eq!(record["created_at"], 1_704_153_600);
    assert_eq!(record["objects"][0]["class_name"], "person");
    assert!(record.get("embedding").is_none() && record["objects"][0].get("embedding").is_none());

    let response =
        h.app.clone().oneshot(Request::get(format!("/images/{id}/file")).body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes().as_ref(), photo(2).as_slice());
}

#[tokio::test]
async fn bad_uploads_are_4xx_and_store_nothing() {
    let h = harness();
    h.ingest(1, &[]).await;
    let (status, body) = h.post_form("/ingest", &[("image", Some("notes.txt"), b"hello, not an image")]).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "cannot decode");
    let (status, body) = h.post_form("/ingest", &[("image", Some("empty.jpg"), b"")]).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "empty");
    let big = vec![0xFFu8; 100 * 1024];
    let (status, body) = h.post_form("/ingest", &[("image", Some("big.jpg"), &big)]).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too large");
    // With a Content-Length over the limit the layer answers before reading the body.
    let request = Request::post("/ingest")
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"))
        .header(header::CONTENT_LENGTH, big.len().to_string())
        .body(Body::from(big.clone()))
        .unwrap();
    let (status, body) = h.send(request).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too large");
    let (status, body) = h.ingest(3, &[("metadata", None, b"{oops")]).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "metadata");
    let (status, body) = h.ingest(3, &[("colour", None, b"red")]).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "colour");
    let (status, body) = h.post_form("/ingest", &[("tags", None, b"x")]).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "no image");
    assert_eq!(h.count().await, 1);
}

#[tokio::test]
async fn triton_unavailable_is_503() {
    let h = harness();
    h.inference.unavailable.store(true, Ordering::SeqCst);
    let (status, body) = h.ingest(4, &[]).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let (status, body) = h.get("/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(h.count().await, 0);
}

#[tokio::test]
async fn text_search_ranks_by_cosine_and_caches_the_query() {
    let h = harness();
    for seed in 0..6 {
        h.ingest(seed, &[]).await;
    }
    let (status, body) = h.get("/search/text?q=abc&k=4").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let scores: Vec<f64> = body["results"].as_array().unwrap().iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert_eq!(scores.len(), 4);
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // "abc" has length 3: the photo with seed 3 points the same way.
    assert_eq!(body["results"][0]["image_id"], content_id(&photo(3)));
    assert!((scores[0] - 1.0).abs() < 1e-4);
    assert!(body["results"][0]["matched_object"]["bbox"].is_array());
    h.get("/search/text?q=abc&k=4").await;
    assert_eq!(h.inference.text_calls.load(Ordering::SeqCst), 1, "the second query must come from the cache");
    let (_, body) = h.get("/search/text?q=abc&k=4&min_score=0.99").await;
    assert_eq!(body["count"], 1);
}

#[tokio::test]
async fn bad_queries_are_400_with_the_reason() {
    let h = harness();
    for (uri, needle) in [
        ("/search/text?q=&k=5", "empty"),
        ("/search/text?k=5", "empty"),
        ("/search/text?q=dog&k=0", "k must be between 1 and 1000"),
        ("/search/text?q=dog&k=100000", "k must be between 1 and 1000"),
        ("/search/text?q=dog&k=abc", "k"),
        ("/search/text?q=dog&min_score=3", "min_score"),
        ("/images/not-a-hash", "not an image id"),
    ] {
        let (status, body) = h.get(uri).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, needle);
    }
    for (body, needle) in [
        (r#"{"text": "dog", "classes": ["person", "unicorn"]}"#, "\"unicorn\""),
        (r#"{"text": "dog""#, "JSON"),
        (r#"{"text": ""}"#, "empty"),
        (r#"{"text": "dog", "k": 0}"#, "k must be"),
        (r#"{"text": "dog", "colour": "red"}"#, "colour"),
    ] {
        let (status, response) = h.post_json("/search/hybrid", body).await;
        assert!(status.is_client_error(), "{body} -> {status}");
        assert!(response["error"].as_str().unwrap().contains(needle), "{body} -> {response}");
    }
    let (status, body) = h.post_json("/search/objects", r#"{"text": "   "}"#).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "empty");
    assert_eq!(h.inference.text_calls.load(Ordering::SeqCst), 0, "no bad query may reach Triton");
    let (status, body) = h.get("/no/such/route").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "no such endpoint");
}

#[tokio::test]
async fn hybrid_filters_by_class_confidence_date_and_tag() {
    let h = harness();
    for seed in 0..8u8 {
        let date = if seed < 4 { "2023-06-01" } else { "2024-06-01" };
        let tag: &[u8] = if seed % 3 == 0 { b"beach" } else { b"city" };
        h.ingest(seed, &[("created_at", None, date.as_bytes()), ("tags", None, tag)]).await;
    }
    let (status, body) =
        h.post_json("/search/hybrid", r#"{"text": "ab", "classes": ["person"], "min_confidence": 0.5, "k": 10}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&str> = body["results"].as_array().unwrap().iter().map(|r| r["image_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "{body}");
    for result in body["results"].as_array().unwrap() {
        assert_eq!(result["matched_object"]["class_name"], "person");
    }
    let (_, body) = h.post_json("/search/hybrid", r#"{"text": "ab", "classes": ["dog"], "min_confidence": 0.7}"#).await;
    assert_eq!(body["count"], 0);
    let (_, body) =
        h.post_json("/search/hybrid", r#"{"text": "ab", "date_from": "2024-01-01", "tags": ["beach"]}"#).await;
    // Seeds 4..8 with seed % 3 == 0: only 6.
    assert_eq!(body["count"], 1, "{body}");
    assert_eq!(body["results"][0]["image_id"], content_id(&photo(6)));
}

#[tokio::test]
async fn similar_and_object_search() {
    let h = harness();
    for seed in 0..5 {
        h.ingest(seed, &[]).await;
    }
    let calls = h.inference.image_calls.load(Ordering::SeqCst);
    let image = photo(2);
    let (status, body) = h.post_form("/search/similar?k=3", &[("image", Some("q.jpg"), &image)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["image_id"], content_id(&image));
    assert!((body["results"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    assert_eq!(h.inference.image_calls.load(Ordering::SeqCst), calls, "a stored photo is its own query");

    // Object embeddings are seed + 1: a query photo with seed 4 matches the object of photo 3.
    let query = photo(4 + DIM as u8);
    let (status, body) = h.post_form("/search/objects?k=2", &[("image", Some("crop.jpg"), &query)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hit = &body["results"][0];
    assert_eq!(hit["image_id"], content_id(&photo(3)));
    assert_eq!((hit["object_index"].as_u64(), hit["class_name"].as_str()), (Some(0), Some("dog")));
    assert_eq!(hit["bbox"], json!([10.0, 20.0, 110.0, 220.0]));

    let (status, body) = h.post_json("/search/objects", r#"{"text": "abcd", "classes": ["person"], "k": 5}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["results"].as_array().unwrap().iter().all(|r| r["class_name"] == "person"), "{body}");
}

/// A form field: name, file name, bytes.
type Part = (&'static str, Option<&'static str>, Vec<u8>);

/// POST /search/region: a box on the real PNG (200x160) goes to the region model in
/// letterbox pixels, and its crop's embedding is the query; every bad form, box or photo is
/// a 4xx naming the problem before Triton is asked; a model that crops elsewhere is a 502.
#[tokio::test]
async fn region_search_sends_the_box_in_letterbox_pixels_and_rejects_bad_ones() {
    let harness = harness_with(|c| c.server.max_request_bytes = 1 << 20);
    let h = &harness;
    for seed in 0..5 {
        h.ingest(seed, &[]).await;
    }
    let (png, _) = face_photo();
    let region = |bbox: &'static str| [("image", Some("q.png"), png.clone()), ("box", None, bbox.as_bytes().to_vec())];
    let send = |parts: Vec<Part>| async move {
        let parts: Vec<_> = parts.iter().map(|(name, file, bytes)| (*name, *file, bytes.as_slice())).collect();
        h.post_form("/search/region?k=2", &parts).await
    };

    // Object embeddings are seed + 1: the crop (seed 4) matches the object of photo 3.
    for bbox in ["20,30,180,150", "[20, 30, 180, 150]"] {
        let (status, body) = send(region(bbox).to_vec()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["count"], 2, "{body}");
        let hit = &body["results"][0];
        assert_eq!((&hit["image_id"], &hit["object_index"]), (&json!(content_id(&photo(3))), &json!(0)), "{body}");
        assert!((hit["score"].as_f64().unwrap() - 1.0).abs() < 1e-6, "{body}");
    }
    assert_eq!(h.inference.region_calls.load(Ordering::SeqCst), 2);

    let not_png = photo(3);
    let cases: Vec<(Vec<Part>, StatusCode, &str)> = vec![
        (vec![("image", Some("q.png"), png.clone())], StatusCode::BAD_REQUEST, "the form has no box field"),
        (vec![("box", None, b"1,2,3,4".to_vec())], StatusCode::BAD_REQUEST, "the form has no image field"),
        (region("1,2,3").to_vec(), StatusCode::BAD_REQUEST, "got 3 number(s)"),
        (region("1,2,3,4,5").to_vec(), StatusCode::BAD_REQUEST, "got 5 number(s)"),
        (region("1,2,NaN,4").to_vec(), StatusCode::BAD_REQUEST, "\"NaN\" is not a finite number"),
        (region("50,30,40,150").to_vec(), StatusCode::BAD_REQUEST, "x1 < x2"),
        (region("20,30,201,150").to_vec(), StatusCode::BAD_REQUEST, "not inside the 200x160 photo"),
        (region("-1,30,180,150").to_vec(), StatusCode::BAD_REQUEST, "not inside the 200x160 photo"),
        (
            [region("1,2,3,4").to_vec(), vec![("box", None, b"1,2,3,4".to_vec())]].concat(),
            StatusCode::BAD_REQUEST,
            "send one box per query",
        ),
        (
            [region("1,2,3,4").to_vec(), vec![("tags", None, b"x".to_vec())]].concat(),
            StatusCode::BAD_REQUEST,
            "unknown form field \"tags\"",
        ),
        (
            vec![("image", Some("q.png"), png[..40].to_vec()), ("box", None, b"1,2,3,4".to_vec())],
            StatusCode::UNPROCESSABLE_ENTITY,
            "PNG",
        ),
        (
            vec![("image", Some("q.txt"), b"plain text".to_vec()), ("box", None, b"1,2,3,4".to_vec())],
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a JPEG, PNG or WebP image",
        ),
    ];
    for (parts, status, needle) in cases {
        let (got, body) = send(parts).await;
        assert_eq!(got, status, "{needle}: {body}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{needle}: {body}");
    }
    assert_eq!(h.inference.region_calls.load(Ordering::SeqCst), 2, "bad queries never reach Triton");

    // Rejected by the crop stage (under its min_box_size): 400, after the call.
    let (status, body) = send(region("20,30,20.5,150").to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("too small to crop"), "{body}");
    // A photo the model cannot decode: its message, 422.
    let (status, body) = send(vec![("image", Some("q.jpg"), not_png), ("box", None, b"1,2,3,4".to_vec())]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // A model that crops another box than asked: 502 naming both.
    h.inference.region_misplaced.store(true, Ordering::SeqCst);
    let (status, body) = send(region("20,30,180,150").to_vec()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not the box asked for [20.0, 30.0, 180.0, 150.0]"), "{body}");
}

#[tokio::test]
async fn batch_reports_each_photo() {
    let h = harness();
    let (a, b) = (photo(10), photo(11));
    let (status, body) = h
        .post_form(
            "/ingest/batch",
            &[
                ("image", Some("a.jpg"), &a),
                ("image", Some("bad.txt"), b"text"),
                ("image", Some("b.jpg"), &b),
                ("image", Some("a2.jpg"), &a),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let statuses: Vec<&str> =
        body["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["created", "failed", "created", "already_stored"]);
    assert_eq!(body["results"][1]["http_status"], 422);
    assert_eq!((body["created"].as_u64(), body["failed"].as_u64()), (Some(2), Some(1)));
    assert_eq!(h.count().await, 2);
}

#[tokio::test]
async fn delete_removes_record_and_file() {
    let h = harness();
    let (_, body) = h.ingest(7, &[]).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, _) = h.send(Request::delete(format!("/images/{id}")).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.get(&format!("/images/{id}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.get(&format!("/images/{id}/file")).await.0, StatusCode::NOT_FOUND);
    let (status, body) = h.send(Request::delete(format!("/images/{id}")).body(Body::empty()).unwrap()).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "no image");
}

#[tokio::test]
async fn service_endpoints_work() {
    let h = harness();
    h.ingest(1, &[]).await;
    let (status, health) = h.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!((health["store"]["kind"].as_str(), health["store"]["images"].as_u64()), (Some("embedded"), Some(1)));
    let (status, metrics) = h.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("gateway_ingested_images_total{outcome=\"created\"} 1"), "{metrics}");
    assert!(metrics.contains("route=\"/ingest\""), "{metrics}");
    let (status, page) = h.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("/search/hybrid"));
}

/// POST /detect: Triton's detections with their class names for new bytes, the record's for
/// stored ones (no Triton call), the decode error for bad ones; nothing is stored.
#[tokio::test]
async fn detect_names_objects_without_storing() {
    let h = harness();
    let (status, body) = h.post_form("/detect", &[("image", Some("q.jpg"), &photo(3))]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["width"].as_u64(), body["height"].as_u64()), (Some(640), Some(480)));
    assert_eq!(body["objects"][0]["class_name"], "dog");
    assert_eq!(body["objects"][0]["bbox"], serde_json::json!([10.0, 20.0, 110.0, 220.0]));
    assert!(body.get("image_id").is_none(), "{body}");
    let (_, health) = h.get("/health").await;
    assert_eq!(health["store"]["images"], 0, "detect stores nothing");

    let (status, stored) = h.ingest(3, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let calls = h.inference.image_calls.load(Ordering::SeqCst);
    let (status, body) = h.post_form("/detect", &[("image", Some("q.jpg"), &photo(3))]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["image_id"], stored["id"]);
    assert_eq!(h.inference.image_calls.load(Ordering::SeqCst), calls, "a stored photo needs no Triton call");

    let (status, body) = h.post_form("/detect", &[("image", Some("bad.jpg"), b"not an image")]).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "cannot decode");
    let (status, body) = h.get("/classes").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["classes"].as_array().unwrap().len(), 80);
}

/// Each scrape runs the health check: readiness and the store's size are current, and a
/// Triton that stops being ready shows at the next scrape.
#[tokio::test]
async fn metrics_carry_the_health_of_each_scrape() {
    let h = harness();
    let gauges = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("gateway_ready ") || l.starts_with("gateway_store_"))
            .map(str::to_owned)
            .collect()
    };
    let (_, metrics) = h.get("/metrics").await;
    assert_eq!(
        gauges(metrics.as_str().unwrap()),
        ["gateway_ready 1", "gateway_store_images{store=\"embedded\"} 0", "gateway_store_ready{store=\"embedded\"} 1"]
    );
    h.ingest(1, &[]).await;
    h.ingest(2, &[]).await;
    h.inference.unavailable.store(true, Ordering::SeqCst);
    let (_, metrics) = h.get("/metrics").await;
    assert_eq!(
        gauges(metrics.as_str().unwrap()),
        ["gateway_ready 0", "gateway_store_images{store=\"embedded\"} 2", "gateway_store_ready{store=\"embedded\"} 1"]
    );
}

/// Every path and method of the OpenAPI document is routed, and every route is documented.
#[tokio::test]
async fn openapi_document_matches_the_router() {
    let h = harness();
    let (status, doc) = h.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
            let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            assert!(policy(&http_method, path).is_some(), "{method} {path} has no access policy");
            let uri = path.replace("{id}", &"0".repeat(64));
            let request = Request::builder()
                .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let status = h.app.clone().oneshot(request).await.unwrap().status();
            // An unknown id is a 404 from the handler, which is routed.
            let routed = status != StatusCode::NOT_FOUND || uri.contains("/images/");
            assert!(routed && status != StatusCode::METHOD_NOT_ALLOWED, "{method} {path} -> {status}");
        }
    }
    documented.sort();
    let expected = [
        "DELETE /images/{id}",
        "GET /",
        "GET /classes",
        "GET /health",
        "GET /images/{id}",
        "GET /images/{id}/faces/{index}/similar",
        "GET /images/{id}/file",
        "GET /images/{id}/objects/{index}/similar",
        "GET /images/{id}/similar",
        "GET /metrics",
        "GET /openapi.json",
        "GET /search/text",
        "POST /detect",
        "POST /faces/embeddings",
        "POST /faces/rerank",
        "POST /ingest",
        "POST /ingest/batch",
        "POST /search/faces",
        "POST /search/hybrid",
        "POST /search/objects",
        "POST /search/region",
        "POST /search/similar",
    ];
    assert_eq!(documented, expected);
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn face_embeddings_group_by_image_dedupe_and_isolate_errors() {
    let h = harness();
    let (a, b) = (photo(2), photo(4));
    let (status, body) = h
        .post_form(
            "/faces/embeddings",
            &[
                ("image", Some("a.jpg"), &a),
                ("image", Some("bad.jpg"), b"not an image"),
                ("image", Some("b.jpg"), &b),
                ("image", Some("a2.jpg"), &a),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h.inference.face_calls.load(Ordering::SeqCst), 3, "the duplicate is analysed once");
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<&str> = results.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["ok", "failed", "ok", "ok"]);
    assert_eq!((results[1]["http_status"].as_u64(), results[1]["name"].as_str()), (Some(422), Some("bad.jpg")));
    assert!(results[1]["error"].as_str().unwrap().contains("cannot decode"));
    assert_eq!(results[3]["duplicate_of"], 0);
    assert_eq!(results[3]["faces"], results[0]["faces"]);
    // Photo 4's second face has rejected landmarks: left out without raw_boxes.
    assert_eq!(results[2]["faces"].as_array().unwrap().len(), 1);
    let face = &results[0]["faces"][0];
    assert_eq!(face["bbox"], json!([30.0, 40.0, 90.0, 120.0]));
    assert_eq!(face["landmarks"].as_array().unwrap().len(), 5);
    assert_eq!(face["embedding"].as_array().unwrap().len(), FACE_DIM);
    assert!(face.get("detector_bbox").is_none());
    assert_eq!(
        (body["images"].as_u64(), body["analyzed"].as_u64(), body["failed"].as_u64()),
        (Some(4), Some(3), Some(1))
    );

    let request =
        json!({"images": [{"name": "b.jpg", "data": b64(&b)}, {"data": "%%%"}], "options": {"raw_boxes": true}});
    let (status, body) = h.post_json("/faces/embeddings", &request.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let faces = body["results"][0]["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 2);
    assert!(faces[1]["embedding"].is_null() && faces[1]["detector_bbox"].is_array());
    assert_eq!(
        (body["results"][1]["status"].as_str(), body["results"][1]["http_status"].as_u64()),
        (Some("failed"), Some(400))
    );

    let (status, body) =
        h.post_form("/faces/embeddings", &[("image", None, &a), ("raw_embeddings", None, b"true")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let raw: Vec<f32> = serde_json::from_value(body["results"][0]["faces"][0]["embedding"].clone()).unwrap();
    assert_eq!(raw, face_vector(a[3]).iter().map(|v| v * 2.0).collect::<Vec<f32>>(), "the fake encoder's raw output");
}

#[tokio::test]
async fn face_embedding_limits_and_options_are_400() {
    let h = harness_with(|c| {
        c.faces.max_images_per_request = 2;
        c.faces.max_image_bytes = 16;
    });
    let image = photo(2);
    let (status, body) = h
        .post_form("/faces/embeddings", &[("image", None, &image), ("image", None, &image), ("image", None, &image)])
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "the limit is 2");
    let big = [JPEG_MAGIC.as_slice(), &[2u8; 20]].concat();
    let (status, body) = h.post_form("/faces/embeddings", &[("image", None, &big), ("image", None, &image)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["http_status"], 413);
    assert_eq!(body["results"][1]["status"], "ok");
    let (status, body) = h.post_json("/faces/embeddings", r#"{"images": []}"#).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "no images");
    assert_eq!(
        h.inference.face_calls.load(Ordering::SeqCst),
        1,
        "only the valid image of the 413 request reached Triton"
    );
}

#[tokio::test]
async fn aligned_faces_carry_the_crop_face_align_made() {
    let h = harness_with(|c| c.server.max_request_bytes = 1 << 20);
    let (png, pixels) = face_photo();
    let fake_jpeg = photo(2);
    let request = json!({
        "images": [{"name": "face.png", "data": b64(&png)}, {"name": "fake.jpg", "data": b64(&fake_jpeg)}],
        "options": {"aligned_faces": true, "raw_boxes": true}
    });
    let (status, body) = h.post_json("/faces/embeddings", &request.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let faces = body["results"][0]["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 2, "{body}");
    assert!(faces[1]["aligned_face_png"].is_null() && faces[1].get("aligned_face_png").is_some(), "rejected: null");
    use base64::Engine;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(faces[0]["aligned_face_png"].as_str().unwrap()).unwrap();
    let face = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap().into_rgb8();
    assert_eq!(face.dimensions(), (112, 112));
    // The landmarks are the template moved by whole pixels: the crop is that window of the photo.
    let [dx, dy] = FACE_SHIFT;
    for (u, v, pixel) in face.enumerate_pixels() {
        let at = (((v + dy) * FACE_PHOTO_SIZE.0 + u + dx) * 3) as usize;
        assert_eq!(pixel.0, [pixels[at], pixels[at + 1], pixels[at + 2]], "({u}, {v})");
    }
    // The fake JPEG passed the (scripted) face_embed but the gateway cannot decode it: that
    // photo alone fails.
    let fake = &body["results"][1];
    assert_eq!((fake["status"].as_str(), fake["http_status"].as_u64()), (Some("failed"), Some(422)), "{fake}");

    // Without the option the field is absent; the same photo as a form field works too.
    let (status, body) = h.post_form("/faces/embeddings", &[("image", Some("face.png"), &png)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["results"][0]["faces"][0].get("aligned_face_png").is_none(), "{body}");
    let (status, body) =
        h.post_form("/faces/embeddings", &[("image", Some("face.png"), &png), ("aligned_faces", None, b"true")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["results"][0]["faces"].as_array().unwrap().len(),
        1,
        "the rejected face is left out without raw_boxes"
    );
    assert_eq!(body["results"][0]["faces"][0]["aligned_face_png"], faces[0]["aligned_face_png"]);
}

#[tokio::test]
async fn rerank_sorts_thresholds_and_rejects_bad_lists() {
    let h = harness_with(|c| c.faces.max_rerank_candidates = 3);
    let body = json!({
        "query": [1.0, 0.0],
        "candidates": [{"id": "far", "embedding": [-1.0, 0.0]}, {"id": "same", "embedding": [5.0, 0.0]}, {"id": "side", "embedding": [0.0, 2.0]}],
        "threshold": 0.4
    });
    let (status, response) = h.post_json("/faces/rerank", &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["results"], json!([{"id": "same", "score": 1.0}, {"id": "side", "score": 0.5}]));
    let diagnostics = &response["diagnostics"];
    assert_eq!(
        (diagnostics["scorer"].as_str(), diagnostics["candidates"].as_u64(), diagnostics["returned"].as_u64()),
        (Some("native"), Some(3), Some(2))
    );
    assert!((diagnostics["threshold"].as_f64().unwrap() - 0.4).abs() < 1e-6);
    assert!(diagnostics["latency_ms"].as_f64().unwrap() >= 0.0);
    // The default threshold (0.7) keeps only the same direction.
    let mut default = body.clone();
    default.as_object_mut().unwrap().remove("threshold");
    let (_, response) = h.post_json("/faces/rerank", &default.to_string()).await;
    assert_eq!(response["results"].as_array().unwrap().len(), 1);

    for (bad, needle) in [
        (
            json!({"query": [1.0, 0.0], "candidates": [{"id": "a", "embedding": [1.0]}]}),
            "has 1 dimensions but the query has 2",
        ),
        (json!({"query": [1.0, 0.0], "candidates": []}), "candidate list is empty"),
        (json!({"query": [], "candidates": [{"id": "a", "embedding": [1.0]}]}), "query embedding is empty"),
        (
            json!({"query": [1.0, 0.0], "candidates": (0..4).map(|i| json!({"id": i.to_string(), "embedding": [1.0, 0.0]})).collect::<Vec<_>>()}),
            "the limit is 3",
        ),
        (json!({"query": [1e39, 0.0], "candidates": [{"id": "a", "embedding": [1.0, 0.0]}]}), "NaN or infinite"),
        (
            json!({"query": [1.0, 0.0], "candidates": [{"id": "a", "embedding": [1.0, 0.0]}], "threshold": 2}),
            "threshold",
        ),
    ] {
        let (status, response) = h.post_json("/faces/rerank", &bad.to_string()).await;
        assert_error(status, &response, StatusCode::BAD_REQUEST, needle);
    }
    let (status, response) = h.post_json("/faces/rerank", r#"{"query": [NaN], "candidates": []}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.as_str().unwrap().contains("gateway_rerank_requests_total{outcome=\"ok\",scorer=\"native\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn faces_are_indexed_on_ingest_and_found_by_photo_or_embedding() {
    let h = harness_with(|c| c.faces.index_on_ingest = true);
    for seed in 0..6 {
        h.ingest(seed, &[]).await;
    }
    assert_eq!(h.inference.face_calls.load(Ordering::SeqCst), 6, "one face call per ingested photo");
    let (_, record) = h.get(&format!("/images/{}", content_id(&photo(4)))).await;
    assert_eq!(record["faces"].as_array().unwrap().len(), 1, "the rejected face is not stored: {record}");

    let query = photo(4);
    let (status, body) = h.post_form("/search/faces?k=3", &[("image", Some("q.jpg"), &query)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hit = &body["results"][0];
    assert_eq!(hit["image_id"], content_id(&photo(4)));
    assert_eq!((hit["face_index"].as_u64(), &hit["bbox"]), (Some(0), &json!([30.0, 40.0, 90.0, 120.0])));
    assert!((hit["score"].as_f64().unwrap() - 1.0).abs() < 1e-5, "{hit}");

    let embedding = face_vector(2);
    let (status, body) = h.post_json("/search/faces", &json!({"embedding": embedding, "k": 1}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["image_id"], content_id(&photo(2)));

    let (status, body) = h.post_json("/search/faces", r#"{"embedding": [1.0, 0.0]}"#).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "faces.embedding_dim is 4");
    let faceless = photo(3);
    let (status, body) = h.post_form("/search/faces", &[("image", None, &faceless)]).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "no face");
    let (_, health) = h.get("/health").await;
    assert_eq!(
        (health["faces"]["index_on_ingest"].as_bool(), health["faces"]["rerank_scorer"].as_str()),
        (Some(true), Some("native"))
    );
}
