//! The inference seam: what the services ask of the models (`Inference`), the analyses it
//! returns, and its error. `triton::TritonInference` implements it over Triton's gRPC API;
//! tests implement it with scripted answers. Every embedding behind this seam is
//! L2-normalised, so the store's scores are cosine similarities whatever the model emitted.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use crop_core::FaceAligner;
use serde::Serialize;
use triton_client::ClientError;
use utoipa::ToSchema;

/// One detected object as the ensemble reported it, in the photo's pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub class_id: u32,
    pub confidence: f32,
    pub bbox: [f32; 4],
    pub embedding: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImageAnalysis {
    /// 0 when the ensemble does not expose the photo's size.
    pub width: u32,
    pub height: u32,
    pub embedding: Vec<f32>,
    pub detections: Vec<Detection>,
}

/// One face as `face_embed` reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectedFace {
    /// Detector score (sigmoid).
    pub score: f32,
    /// x1, y1, x2, y2 in the photo's pixels (after EXIF orientation).
    pub bbox: [f32; 4],
    /// The detector's own box: in the pixels of preprocess's `original`, which differ
    /// from the photo's only when its longest side was capped.
    pub detector_bbox: [f32; 4],
    /// Eyes, nose, mouth corners (x, y) in the photo's pixels, image-left first per pair.
    pub landmarks: [[f32; 2]; 5],
    /// The same landmarks in `original` pixels, as face_align aligned the face from them.
    pub detector_landmarks: [[f32; 2]; 5],
    /// L2-normalised; `None` when face_align rejected the landmarks (`face_valid` false).
    pub embedding: Option<Vec<f32>>,
    /// The encoder's output as `face_embed` returned it (face_encoder does not normalise);
    /// `None` exactly when `embedding` is.
    pub raw_embedding: Option<Vec<f32>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FaceAnalysis {
    pub width: u32,
    pub height: u32,
    /// Best score first, as the detector ranks them.
    pub faces: Vec<DetectedFace>,
}

/// The parameters of `models.preprocess_model` the gateway must agree with: read from
/// Triton's model config, never copied into the gateway's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreprocessSettings {
    /// Side of the detector's letterbox square, the frame region boxes are sent in.
    pub yolo_size: u32,
    /// Longest side of `original`: face boxes and landmarks come in its pixels.
    pub original_max_side: u32,
    /// Largest photo preprocess decodes, in pixels; the gateway's own decodes keep to it.
    pub max_pixels: u64,
}

/// One box of a photo, cropped and encoded as the ingest model does a detection.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionAnalysis {
    /// The photo's size after EXIF orientation, as preprocess decoded it.
    pub width: u32,
    pub height: u32,
    /// The box as the crop stage read it, back in the photo's pixels (clamped to the photo).
    pub bbox: [f32; 4],
    /// L2-normalised; `None` when the crop stage rejected the box (`box_valid` false: too
    /// small once mapped to the pixels it crops from).
    pub embedding: Option<Vec<f32>>,
}

/// What re-creating face_align's crops needs.
#[derive(Clone, Debug)]
pub struct FaceAlignment {
    pub aligner: Arc<FaceAligner>,
    pub preprocess: PreprocessSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(transparent)]
    Triton(#[from] ClientError),
    /// Triton answered, but not with what the contract promises (outputs, or a config
    /// the gateway reads).
    #[error("{model} broke its contract: {reason}")]
    Contract { model: String, reason: String },
}

/// Whether Triton and each model the gateway needs are ready.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct InferenceHealth {
    pub ready: bool,
    /// At least one endpoint's server is ready.
    pub server_ready: bool,
    /// Asked of a ready endpoint (every endpoint serves the same models).
    pub models: Vec<ModelHealth>,
    /// Every configured Triton endpoint, in the configured order.
    pub endpoints: Vec<EndpointHealth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One Triton endpoint of `triton.endpoints`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EndpointHealth {
    pub endpoint: String,
    /// Takes calls: its server answered ready to this report's probe.
    pub ready: bool,
    /// Calls sent to it and not yet answered.
    pub in_flight: usize,
    /// Times it was taken out (unreachable, connection lost, or not ready) since the gateway started.
    pub taken_out: u64,
    /// Why it was last taken out; kept after it is back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ModelHealth {
    pub name: String,
    pub ready: bool,
    /// Whether the gateway's readiness depends on this model (face models only when
    /// faces are indexed on ingest).
    pub required: bool,
}

#[async_trait]
pub trait Inference: Send + Sync {
    async fn analyze_image(&self, image: Bytes) -> Result<ImageAnalysis, InferenceError>;
    /// The faces of one photo through `face_embed`.
    async fn analyze_faces(&self, image: Bytes) -> Result<FaceAnalysis, InferenceError>;
    /// The L2-normalised embedding of a text query.
    async fn embed_text(&self, text: &str) -> Result<Vec<f32>, InferenceError>;
    /// How Triton aligns faces: `faces.align_model`'s settings and the frame it aligns in
    /// (preprocess's `original`), both read from the models' configs.
    async fn face_alignment(&self) -> Result<FaceAlignment, InferenceError>;
    /// The parameters of the preprocess model, read from its config in Triton.
    async fn preprocess_settings(&self) -> Result<PreprocessSettings, InferenceError>;
    /// One box of a photo through the region model: `letterbox_box` (x1, y1, x2, y2) is in
    /// the detector's letterbox pixels, where the ingest model's detections are.
    async fn embed_region(&self, image: Bytes, letterbox_box: [f32; 4]) -> Result<RegionAnalysis, InferenceError>;
    async fn health(&self) -> InferenceHealth;
}

/// Scales to unit length; `None` for a zero or non-finite vector, which has no direction.
pub fn normalized(mut vector: Vec<f32>) -> Option<Vec<f32>> {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return None;
    }
    vector.iter_mut().for_each(|v| *v /= norm);
    Some(vector)
}
