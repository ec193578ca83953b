//! What is stored per photo.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Hex SHA-256 of the uploaded bytes: re-ingesting the same file is idempotent.
    pub id: String,
    pub width: u32,
    pub height: u32,
    /// Unix seconds; given by the client or the ingest time.
    pub created_at: i64,
    pub tags: Vec<String>,
    /// Free-form client metadata (a JSON object).
    pub metadata: serde_json::Value,
    /// Whole-image embedding.
    pub embedding: Vec<f32>,
    pub objects: Vec<ObjectRecord>,
    pub faces: Vec<FaceRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub class_id: u32,
    pub class_name: String,
    /// Detector confidence in [0, 1].
    pub confidence: f32,
    /// x1, y1, x2, y2 in the uploaded image's pixels (after EXIF orientation).
    pub bbox: [f32; 4],
    pub embedding: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaceRecord {
    pub confidence: f32,
    pub bbox: [f32; 4],
    /// Eyes, nose, mouth corners (x, y) in image pixels.
    pub landmarks: [[f32; 2]; 5],
    pub embedding: Vec<f32>,
}
