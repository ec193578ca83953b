//! Wire types of the REST API: the JSON bodies clients send and receive. Store records
//! are converted here, at the edge, so vectors never leave the service.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use visual_store::matching::summary;
use visual_store::{ImageRecord, ObjectSummary};

use crate::inference::InferenceHealth;

/// A date bound: unix seconds, an RFC 3339 timestamp, or a `YYYY-MM-DD` day.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
#[serde(untagged)]
pub enum DateBound {
    Seconds(i64),
    Text(String),
}

/// Body of POST /search/hybrid.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HybridQuery {
    pub text: String,
    /// The image has an object of one of these classes with confidence >= `min_confidence`.
    pub classes: Vec<String>,
    pub min_confidence: Option<f32>,
    pub date_from: Option<DateBound>,
    pub date_to: Option<DateBound>,
    /// The image carries every one of these tags.
    pub tags: Vec<String>,
    pub k: Option<usize>,
    pub offset: Option<usize>,
    pub min_score: Option<f32>,
    /// Return each photo's metadata in its result (left out by default: it may be large).
    pub include_metadata: bool,
}

/// Body of POST /search/objects (the JSON form; the multipart form carries an image).
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectQuery {
    pub text: String,
    /// Only objects of these classes with confidence >= `min_confidence`.
    pub classes: Vec<String>,
    pub min_confidence: Option<f32>,
    pub k: Option<usize>,
    pub offset: Option<usize>,
    pub min_score: Option<f32>,
}

/// Query string of GET /search/text.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct TextSearchParams {
    /// The text query (at most 1000 characters).
    #[param(min_length = 1)]
    pub q: Option<String>,
    /// Results per page (default `search.default_k`, at most `search.max_k`).
    #[param(minimum = 1)]
    pub k: Option<usize>,
    /// Results skipped (`offset + k` at most `search.max_window`).
    pub offset: Option<usize>,
    /// Cosine under which results are dropped, in [-1, 1].
    #[param(minimum = -1.0, maximum = 1.0)]
    pub min_score: Option<f32>,
    /// Return each photo's metadata in its result (left out by default: it may be large).
    pub include_metadata: bool,
}

/// Query string of the image-upload searches (the multipart forms).
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Results per page (default `search.default_k`, at most `search.max_k`).
    #[param(minimum = 1)]
    pub k: Option<usize>,
    /// Results skipped (`offset + k` at most `search.max_window`).
    pub offset: Option<usize>,
    /// Cosine under which results are dropped, in [-1, 1].
    #[param(minimum = -1.0, maximum = 1.0)]
    pub min_score: Option<f32>,
    /// Similar-photo search: return each photo's metadata in its result.
    pub include_metadata: bool,
}

/// Every error: its status and this body.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// The multipart form of POST /ingest and POST /ingest/batch (one `image` for /ingest).
#[derive(ToSchema)]
pub struct IngestForm {
    /// The photo (JPEG, PNG or WebP); repeated in a batch.
    #[schema(value_type = Vec<String>, format = Binary)]
    pub image: Vec<Vec<u8>>,
    /// Comma-separated, and/or repeated.
    pub tags: Option<String>,
    /// A JSON object stored with the photo.
    pub metadata: Option<String>,
    /// Unix seconds, RFC 3339 or YYYY-MM-DD.
    pub created_at: Option<String>,
}

/// The multipart form of the searches by photo: one `image`.
#[derive(ToSchema)]
pub struct QueryImageForm {
    #[schema(value_type = String, format = Binary)]
    pub image: Vec<u8>,
}

/// The multipart form of POST /search/region: the photo and one box on it.
#[derive(ToSchema)]
pub struct RegionQueryForm {
    #[schema(value_type = String, format = Binary)]
    pub image: Vec<u8>,
    /// `x1,y1,x2,y2` (or a JSON array of the four) in the photo's pixels after EXIF
    /// orientation, inside the photo, x1 < x2 and y1 < y2.
    #[schema(rename = "box", example = "10,20,110,220")]
    pub bbox: String,
}

/// The multipart form of POST /faces/embeddings.
#[derive(ToSchema)]
pub struct FaceEmbeddingsForm {
    /// Photos, repeated (at most `faces.max_images_per_request`).
    #[schema(value_type = Vec<String>, format = Binary)]
    pub image: Vec<Vec<u8>>,
    /// `true` or `false`, as in `FaceOptions`.
    pub aligned_faces: Option<bool>,
    pub raw_embeddings: Option<bool>,
    pub raw_boxes: Option<bool>,
}

/// A detected object without its vector.
#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct ObjectView {
    pub index: usize,
    pub class_id: u32,
    pub class_name: String,
    pub confidence: f32,
    pub bbox: [f32; 4],
}

#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct FaceView {
    pub index: usize,
    pub confidence: f32,
    pub bbox: [f32; 4],
    pub landmarks: [[f32; 2]; 5],
}

/// GET /images/{id}: the stored record without vectors.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ImageView {
    pub id: String,
    pub file_url: String,
    pub width: u32,
    pub height: u32,
    pub created_at: i64,
    pub tags: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub objects: Vec<ObjectView>,
    pub faces: Vec<FaceView>,
}

/// The object of a result image closest to the query, for drawing its box.
#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct MatchedObject {
    #[serde(flatten)]
    pub object: ObjectView,
    /// Cosine similarity of the object's embedding to the query.
    pub score: f32,
}

/// One image of a text, hybrid or similar search.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ImageResult {
    pub image_id: String,
    /// Cosine similarity of the whole-image embedding to the query.
    pub score: f32,
    pub file_url: String,
    pub width: u32,
    pub height: u32,
    pub created_at: i64,
    pub tags: Vec<String>,
    /// Only when the query asked for it (`include_metadata`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub matched_object: Option<MatchedObject>,
    pub objects: Vec<ObjectView>,
}

/// One object of an object search: which image, which box, how well it matched.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ObjectResult {
    pub image_id: String,
    pub file_url: String,
    pub object_index: usize,
    pub class_name: String,
    /// Detector confidence.
    pub confidence: f32,
    pub bbox: [f32; 4],
    /// Cosine similarity of the object's embedding to the query.
    pub score: f32,
    pub width: u32,
    pub height: u32,
}

/// POST /detect: the objects of a query photo, in its pixels (after EXIF orientation), for
/// picking one to search by region. Nothing is stored.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DetectResponse {
    /// Set when the same bytes are stored: the objects are then the stored record's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    pub width: u32,
    pub height: u32,
    pub objects: Vec<ObjectView>,
}

/// GET /classes: the detector's class names, which class filters accept.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ClassesResponse {
    pub classes: Vec<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SearchResponse<T> {
    pub k: usize,
    pub offset: usize,
    pub count: usize,
    pub took_ms: f64,
    pub results: Vec<T>,
}

/// Result of one uploaded photo.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IngestResult {
    pub id: String,
    /// `created` or `already_stored`.
    pub status: &'static str,
    pub width: u32,
    pub height: u32,
    pub objects: usize,
}

/// One entry of POST /ingest/batch, in upload order.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct BatchItem {
    pub filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `created`, `already_stored` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The HTTP status this image alone would have got.
    pub http_status: u16,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    pub created: usize,
    pub already_stored: usize,
    pub failed: usize,
    pub results: Vec<BatchItem>,
}

pub fn file_url(id: &str) -> String {
    format!("/images/{id}/file")
}

pub fn object_view(index: usize, object: &ObjectSummary) -> ObjectView {
    ObjectView {
        index,
        class_id: object.class_id,
        class_name: object.class_name.clone(),
        confidence: object.confidence,
        bbox: object.bbox,
    }
}

impl From<&ImageRecord> for ImageView {
    fn from(record: &ImageRecord) -> Self {
        ImageView {
            id: record.id.clone(),
            file_url: file_url(&record.id),
            width: record.width,
            height: record.height,
            created_at: record.created_at,
            tags: record.tags.clone(),
            metadata: record.metadata.clone(),
            objects: record.objects.iter().enumerate().map(|(i, o)| object_view(i, &summary(o))).collect(),
            faces: record
                .faces
                .iter()
                .enumerate()
                .map(|(index, f)| FaceView { index, confidence: f.confidence, bbox: f.bbox, landmarks: f.landmarks })
                .collect(),
        }
    }
}

/// Options of POST /faces/embeddings (JSON `options`, or form fields of the same names).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FaceOptions {
    /// Adds each face's aligned crop as the encoder saw it (`aligned_face_png`).
    pub aligned_faces: bool,
    /// Each face's `embedding` as the encoder gave it, before the gateway's L2 normalisation.
    pub raw_embeddings: bool,
    /// Adds each face's box in the detector's frame and the faces whose landmarks
    /// face_align rejected (they carry no embedding).
    pub raw_boxes: bool,
}

/// One image of the JSON form of POST /faces/embeddings.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Base64Image {
    /// Echoed back in the result, like a multipart file name.
    #[serde(default)]
    pub name: Option<String>,
    /// The encoded photo (JPEG, PNG or WebP), standard base64.
    pub data: String,
}

/// JSON body of POST /faces/embeddings.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaceEmbeddingsRequest {
    pub images: Vec<Base64Image>,
    #[serde(default)]
    pub options: FaceOptions,
}

/// One face of one image.
#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct FaceEmbeddingView {
    pub index: usize,
    /// Detector score in [0, 1].
    pub score: f32,
    /// x1, y1, x2, y2 in the photo's pixels (after EXIF orientation).
    pub bbox: [f32; 4],
    /// Eyes, nose, mouth corners (x, y), image-left first per pair.
    pub landmarks: [[f32; 2]; 5],
    /// L2-normalised (with raw_embeddings: the encoder's output as it is); null for a face
    /// whose landmarks were rejected (only with raw_boxes).
    pub embedding: Option<Vec<f32>>,
    /// With raw_boxes: the detector's box in preprocess's `original` pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector_bbox: Option<[f32; 4]>,
    /// With aligned_faces: the face_size x face_size RGB face face_encoder was given, as
    /// base64 PNG; null for a face whose landmarks were rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aligned_face_png: Option<Option<String>>,
}

/// The faces of one input image, in request order.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FaceImageResult {
    /// Position of the image in the request.
    pub index: usize,
    pub name: Option<String>,
    /// Hex SHA-256 of the image bytes (absent when base64 decoding failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// `ok` or `failed`.
    pub status: &'static str,
    /// The same bytes came earlier in the request, at this index: analysed once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    pub faces: Vec<FaceEmbeddingView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The HTTP status this image alone would have got.
    pub http_status: u16,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FaceEmbeddingsResponse {
    pub images: usize,
    /// Images sent to Triton (distinct, valid ones).
    pub analyzed: usize,
    pub failed: usize,
    pub faces: usize,
    pub embedding_dim: usize,
    pub took_ms: f64,
    pub results: Vec<FaceImageResult>,
}

/// Body of POST /faces/rerank.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankRequest {
    pub query: Vec<f32>,
    pub candidates: Vec<RerankCandidate>,
    /// Score in [0, 1] under which candidates are dropped; default `faces.rerank_threshold`.
    #[serde(default)]
    pub threshold: Option<f32>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankCandidate {
    pub id: String,
    pub embedding: Vec<f32>,
}

#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct RerankHit {
    pub id: String,
    /// (1 + cos) / 2 of the L2-normalised vectors, in [0, 1].
    pub score: f32,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RerankDiagnostics {
    /// `native`, or `plugin:<library path>`.
    pub scorer: String,
    pub threshold: f32,
    pub candidates: usize,
    pub returned: usize,
    pub dim: usize,
    /// Checking, scoring and sorting, in milliseconds.
    pub latency_ms: f64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RerankResponse {
    pub results: Vec<RerankHit>,
    pub diagnostics: RerankDiagnostics,
}

/// JSON body of POST /search/faces (the multipart form carries a photo instead).
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FaceQuery {
    /// A face embedding of `faces.embedding_dim` values (normalised here).
    pub embedding: Vec<f32>,
    pub k: Option<usize>,
    pub offset: Option<usize>,
    pub min_score: Option<f32>,
}

/// One stored face matching the query: its image and box.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FaceResult {
    pub image_id: String,
    pub file_url: String,
    pub face_index: usize,
    pub bbox: [f32; 4],
    /// Cosine similarity of the face's embedding to the query.
    pub score: f32,
    pub width: u32,
    pub height: u32,
}

/// DELETE /images/{id}.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeleteResult {
    pub id: String,
    pub deleted: bool,
}

/// GET /health: 200 when `status` is `ok`, 503 otherwise.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    pub triton: InferenceHealth,
    pub store: StoreHealth,
    pub faces: FacesHealth,
}

/// GET /health without an API key when keys are configured: readiness only, none of the
/// URLs, model names or error texts of the full report.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HealthSummary {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    pub triton_ready: bool,
    pub store_ready: bool,
}

impl HealthSummary {
    pub fn of(report: &HealthResponse) -> HealthSummary {
        HealthSummary { status: report.status, triton_ready: report.triton.ready, store_ready: report.store.ready }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StoreHealth {
    /// `embedded` or `opensearch`.
    pub kind: String,
    pub ready: bool,
    /// Stored photos (when the store answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<usize>,
    /// Records set aside when the store opened because they could not be read back
    /// (docs/stores.md, quarantine); non-zero deserves a look at the log.
    pub quarantined: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// OpenSearch: each node, in service or taken out after failing to answer (and why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<StoreNodeHealth>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StoreNodeHealth {
    pub url: String,
    /// Out: gets no requests until it answers a probe.
    pub out: bool,
    /// Failed connections and probes in a row.
    pub failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl From<visual_store::NodeHealth> for StoreNodeHealth {
    fn from(node: visual_store::NodeHealth) -> Self {
        StoreNodeHealth { url: node.url, out: node.out, failures: node.failures, last_error: node.last_error }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FacesHealth {
    pub model: String,
    pub index_on_ingest: bool,
    /// `native`, or `plugin:<library path>`.
    pub rerank_scorer: String,
}
