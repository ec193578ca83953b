//! Vector storage for photos, their detected objects and faces, behind one trait.
//!
//! Every vector is L2-normalised by the caller; every score a store returns is the true
//! cosine similarity in [-1, 1], whatever the backend computes internally.
//!
//! Two implementations: [`embedded::EmbeddedStore`] (redb records + usearch HNSW, no
//! server; the default) and [`opensearch::OpenSearchStore`] (k-NN plugin, lucene HNSW).
//! Both check queries and records with the same rules ([`validate`]) and pass one contract
//! suite (`tests/contract.rs`). Why these crates: `docs/stores.md`.
//!
//! A search hit carries what a search result shows (image size, tags, metadata, objects
//! without vectors, the matched object: [`matching`]), so a search is one store call.
//!
//! Layer: storage with no workspace dependencies (nothing of HTTP, gRPC or Triton). Imported
//! by the gateway.

pub mod embedded;
pub mod matching;
pub mod opensearch;
mod record;
pub mod validate;

pub use record::{FaceRecord, ImageRecord, ObjectRecord};
pub use validate::QueryLimits;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Restricts a search to images that match every given condition.
///
/// The object condition (`classes`, `min_confidence`) is active when `classes` is not
/// empty or `min_confidence > 0`: an empty `classes` then means "any class".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchFilter {
    /// The image has at least one object of one of these classes with score >= `min_confidence`.
    /// For object search: the object itself has one of these classes.
    pub classes: Vec<String>,
    pub min_confidence: f32,
    /// Inclusive bounds on `ImageRecord::created_at` (unix seconds).
    pub created_from: Option<i64>,
    pub created_to: Option<i64>,
    /// The image carries every one of these tags.
    pub tags: Vec<String>,
}

/// Which slice of the ranked results to return: ranks `offset .. offset + k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub k: usize,
    pub offset: usize,
}

/// One image of an image search, with what a result shows: the record without its vectors
/// (so a search is one store call, not one more per hit) and the object that matched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageHit {
    pub image_id: String,
    pub score: f32,
    pub width: u32,
    pub height: u32,
    pub created_at: i64,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    /// Every object of the image, in `ImageRecord::objects` order.
    pub objects: Vec<ObjectSummary>,
    /// The object closest to the query among those the filter allows ([`matching`]).
    pub matched_object: Option<MatchedObject>,
}

/// A stored object without its vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectSummary {
    pub class_id: u32,
    pub class_name: String,
    pub confidence: f32,
    pub bbox: [f32; 4],
}

/// Which object of an image hit is closest to the query, and its cosine.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchedObject {
    /// Position in `ImageHit::objects` (and `ImageRecord::objects`).
    pub object_index: usize,
    pub score: f32,
}

/// One object of a stored image; `object_index` is its position in `ImageRecord::objects`.
/// `width` and `height` are its image's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectHit {
    pub image_id: String,
    pub object_index: usize,
    pub class_name: String,
    pub confidence: f32,
    pub bbox: [f32; 4],
    pub score: f32,
    pub width: u32,
    pub height: u32,
}

/// One face of a stored image; `face_index` is its position in `ImageRecord::faces`.
/// `width` and `height` are its image's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaceHit {
    pub image_id: String,
    pub face_index: usize,
    pub bbox: [f32; 4],
    pub score: f32,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// An image with the same id (content hash) was already stored; nothing changed.
    AlreadyStored,
}

/// A server behind a store (an OpenSearch node), as the store sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeHealth {
    pub url: String,
    /// Taken out after a failed connection; back at its first answered probe.
    pub out: bool,
    /// Failed connections and probes in a row.
    pub failures: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store schema mismatch: {0}")]
    SchemaMismatch(String),
    #[error("storage I/O: {0}")]
    Io(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The storage every gateway endpoint goes through. A successful `put` is durable.
#[async_trait]
pub trait Store: Send + Sync {
    /// Short name for health and logs ("embedded", "opensearch").
    fn kind(&self) -> &'static str;
    /// Reachable and schema-compatible.
    async fn ready(&self) -> Result<()>;
    /// Stored records set aside because they cannot be served, for health reports: the
    /// embedded store moves such records to its quarantine when it opens (docs/stores.md).
    /// A store that reads nothing back at start (OpenSearch refuses a bad document when it
    /// is written) has none.
    fn quarantined(&self) -> usize {
        0
    }
    /// The servers behind the store, each as the store sees it; none for a store in this
    /// process.
    fn nodes(&self) -> Vec<NodeHealth> {
        Vec::new()
    }
    async fn put(&self, record: ImageRecord) -> Result<PutOutcome>;
    /// Several records with one durable commit; one result per record, in order.
    async fn put_batch(&self, records: Vec<ImageRecord>) -> Result<Vec<Result<PutOutcome>>>;
    async fn get(&self, image_id: &str) -> Result<Option<ImageRecord>>;
    /// True when something was deleted.
    async fn delete(&self, image_id: &str) -> Result<bool>;
    async fn count(&self) -> Result<usize>;
    /// Search answers carry what a result shows (no vectors): one call per search.
    async fn search_images(&self, query: &[f32], filter: &SearchFilter, page: Page) -> Result<Vec<ImageHit>>;
    async fn search_objects(&self, query: &[f32], filter: &SearchFilter, page: Page) -> Result<Vec<ObjectHit>>;
    async fn search_faces(&self, query: &[f32], filter: &SearchFilter, page: Page) -> Result<Vec<FaceHit>>;
}
