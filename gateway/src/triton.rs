//! The Triton adapter: `TritonInference` implements the `inference::Inference` seam over
//! Triton's gRPC API, through a `TritonPool` of one or more servers: one photo through the `visual_ingest` ensemble (detections, global
//! and per-object embeddings), one photo through the `face_embed` ensemble (faces,
//! landmarks, face embeddings), one text query through the tokenizer and `clip_text`, and
//! the settings the gateway must share with Triton read from the model configs
//! (`face_align`'s alignment, `preprocess`'s `yolo_size`, `original_max_side` and
//! `max_pixels`), and one client box of a photo through the `region_embed` ensemble.
//!
//! Every tensor Triton returns is checked against the contract (sizes, counts, class
//! ids) before it becomes a record, and every embedding is L2-normalised here so the
//! store's scores are cosine similarities whatever the model emitted.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use clip_tokenizer::ClipTokenizer;
use crop_core::FaceAligner;
use tokio::sync::OnceCell;
use triton_client::{EndpointStatus, InferRequest, InferResponse, InputTensor, TritonPool};

use crate::config::{FacesConfig, ModelsConfig};
use crate::inference::{
    normalized, DetectedFace, Detection, EndpointHealth, FaceAlignment, FaceAnalysis, ImageAnalysis, Inference,
    InferenceError, InferenceHealth, ModelHealth, PreprocessSettings, RegionAnalysis,
};
use crate::metrics::Metrics;

pub struct TritonInference {
    triton: TritonPool,
    models: ModelsConfig,
    faces: FacesConfig,
    tokenizer: ClipTokenizer,
    metrics: Arc<Metrics>,
    /// Outputs requested from the ingest model, settled from its metadata on first use
    /// (Triton may come up after the gateway).
    ingest_outputs: OnceCell<Vec<String>>,
    /// Read from the align model's config on first use, for the same reason; a failed
    /// read is not kept, so the next request asks again.
    face_aligner: OnceCell<Arc<FaceAligner>>,
    /// Read from the preprocess model's config on first use, likewise.
    preprocess: OnceCell<PreprocessSettings>,
}

impl TritonInference {
    pub fn new(
        triton: TritonPool,
        models: ModelsConfig,
        faces: FacesConfig,
        tokenizer: ClipTokenizer,
        metrics: Arc<Metrics>,
    ) -> Self {
        TritonInference {
            triton,
            models,
            faces,
            tokenizer,
            metrics,
            ingest_outputs: OnceCell::new(),
            face_aligner: OnceCell::new(),
            preprocess: OnceCell::new(),
        }
    }

    /// One inference call, run to its end whatever happens to the caller. Triton 2.51 can
    /// crash when a gRPC call is cancelled while in flight (server#7368, fixed in 24.12), and a
    /// dropped future cancels its call: an HTTP client that goes away, or a sibling call that
    /// failed first in a `try_join!`. In a task of its own the call is never cancelled; its
    /// deadline (`triton.request_timeout_ms`) still bounds it.
    async fn infer(&self, request: InferRequest) -> Result<InferResponse, InferenceError> {
        let model = request.model.clone();
        let (triton, metrics) = (self.triton.clone(), self.metrics.clone());
        let call = tokio::spawn(async move {
            let started = Instant::now();
            let result = triton.infer(request).await;
            metrics.observe_triton(&model, started.elapsed(), result.as_ref().err());
            result
        });
        match call.await {
            Ok(result) => Ok(result?),
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => unreachable!("the inference task is never aborted: {err}"),
        }
    }

    /// The required outputs, plus `image_size` when the ensemble exposes it; fails with
    /// a clear message when a required output is missing or D disagrees with the config.
    async fn ingest_outputs(&self) -> Result<&Vec<String>, InferenceError> {
        self.ingest_outputs
            .get_or_try_init(|| async {
                let metadata = self.triton.model_metadata(&self.models.ingest_model).await?;
                let names: Vec<&str> = metadata.outputs.iter().map(|o| o.name.as_str()).collect();
                let contract =
                    |reason: String| InferenceError::Contract { model: self.models.ingest_model.clone(), reason };
                let mut wanted = Vec::new();
                for name in required_ingest_outputs(&self.models) {
                    if !names.contains(&name) {
                        return Err(contract(format!("has no output {name:?} (outputs: {names:?})")));
                    }
                    wanted.push(name.to_owned());
                }
                if let Some(embedding) = metadata.outputs.iter().find(|o| o.name == self.models.embedding_output) {
                    let last = embedding.shape.last().copied().unwrap_or(-1);
                    if last > 0 && last as usize != self.models.embedding_dim {
                        return Err(contract(format!(
                            "output {:?} has shape {:?} but models.embedding_dim is {}",
                            embedding.name, embedding.shape, self.models.embedding_dim
                        )));
                    }
                }
                let size = self.models.image_size_output.as_str();
                if !size.is_empty() {
                    if names.contains(&size) {
                        wanted.push(size.to_owned());
                    } else {
                        tracing::warn!(model = %self.models.ingest_model, output = size,
                            "ingest model does not expose the photo size; width and height are stored as 0");
                    }
                }
                Ok(wanted)
            })
            .await
    }
}

fn required_ingest_outputs(models: &ModelsConfig) -> [&str; 7] {
    [
        &models.num_dets_output,
        &models.boxes_output,
        &models.scores_output,
        &models.classes_output,
        &models.embedding_output,
        &models.box_embeddings_output,
        &models.box_valid_output,
    ]
}

#[async_trait]
impl Inference for TritonInference {
    async fn analyze_image(&self, image: Bytes) -> Result<ImageAnalysis, InferenceError> {
        let outputs = self.ingest_outputs().await?.clone();
        let shape = vec![1, image.len() as i64];
        let request = InferRequest {
            model: self.models.ingest_model.clone(),
            inputs: vec![InputTensor::uint8(self.models.ingest_input.clone(), shape, image)],
            outputs,
        };
        let response = self.infer(request).await?;
        decode_ingest(&response, &self.models)
    }

    async fn analyze_faces(&self, image: Bytes) -> Result<FaceAnalysis, InferenceError> {
        let faces = &self.faces;
        let request = InferRequest {
            model: faces.model.clone(),
            inputs: vec![InputTensor::uint8(faces.input.clone(), vec![1, image.len() as i64], image)],
            // Every output, so a failing step's own message reaches the client (docs/gateway.md).
            outputs: face_outputs(faces).map(str::to_owned).to_vec(),
        };
        let original_max_side = self.preprocess_settings().await?.original_max_side;
        let response = self.infer(request).await?;
        let analysis = decode_faces(&response, faces, original_max_side)?;
        self.metrics.count_faces(analysis.faces.len());
        Ok(analysis)
    }

    async fn embed_text(&self, text: &str) -> Result<Vec<f32>, InferenceError> {
        let tokens = self.tokenizer.tokenize(text);
        let request = InferRequest {
            model: self.models.text_model.clone(),
            inputs: vec![InputTensor::int64(self.models.text_input.clone(), vec![1, tokens.len() as i64], &tokens)],
            outputs: vec![self.models.text_output.clone()],
        };
        let response = self.infer(request).await?;
        let contract = |reason: String| InferenceError::Contract { model: self.models.text_model.clone(), reason };
        let values = response.output(&self.models.text_output)?.as_f32()?;
        if values.len() != self.models.embedding_dim {
            return Err(contract(format!(
                "{:?} has {} values, expected models.embedding_dim = {}",
                self.models.text_output,
                values.len(),
                self.models.embedding_dim
            )));
        }
        normalized(values).ok_or_else(|| contract("the text embedding is zero or not finite".into()))
    }

    async fn face_alignment(&self) -> Result<FaceAlignment, InferenceError> {
        let aligner = self
            .face_aligner
            .get_or_try_init(|| async {
                let model = &self.faces.align_model;
                let parameters = self.triton.model_parameters(model).await?;
                let aligner =
                    FaceAligner::from_parameters(|key| parameters.get(key).map(String::as_str)).map_err(|err| {
                        InferenceError::Contract {
                            model: model.clone(),
                            reason: format!("its config cannot align faces: {err}"),
                        }
                    })?;
                Ok::<_, InferenceError>(Arc::new(aligner))
            })
            .await?;
        Ok(FaceAlignment { aligner: aligner.clone(), preprocess: self.preprocess_settings().await? })
    }

    /// `yolo_size`, `original_max_side` and `max_pixels` of the preprocess model, as Triton
    /// loaded it.
    async fn preprocess_settings(&self) -> Result<PreprocessSettings, InferenceError> {
        let settings = self
            .preprocess
            .get_or_try_init(|| async {
                let model = &self.models.preprocess_model;
                let parameters = self.triton.model_parameters(model).await?;
                let number = |key: &str| -> Result<u64, InferenceError> {
                    let text = parameters.get(key).ok_or_else(|| InferenceError::Contract {
                        model: model.clone(),
                        reason: format!("its config has no parameter {key:?}"),
                    })?;
                    text.trim().parse::<u64>().ok().filter(|&n| n >= 1).ok_or_else(|| InferenceError::Contract {
                        model: model.clone(),
                        reason: format!("parameter {key:?} must be a positive integer, got {text:?}"),
                    })
                };
                let side = |key: &str| -> Result<u32, InferenceError> {
                    u32::try_from(number(key)?).map_err(|_| InferenceError::Contract {
                        model: model.clone(),
                        reason: format!("parameter {key:?} is too large"),
                    })
                };
                Ok::<_, InferenceError>(PreprocessSettings {
                    yolo_size: side("yolo_size")?,
                    original_max_side: side("original_max_side")?,
                    max_pixels: number("max_pixels")?,
                })
            })
            .await?;
        Ok(*settings)
    }

    async fn embed_region(&self, image: Bytes, letterbox_box: [f32; 4]) -> Result<RegionAnalysis, InferenceError> {
        let models = &self.models;
        let request = InferRequest {
            model: models.region_model.clone(),
            inputs: vec![
                InputTensor::uint8(models.ingest_input.clone(), vec![1, image.len() as i64], image),
                InputTensor::fp32(models.region_boxes_input.clone(), vec![1, 1, 4], &letterbox_box),
                InputTensor::int32(models.region_count_input.clone(), vec![1, 1], &[1]),
            ],
            // Every output, so a failing step's own message reaches the client (docs/gateway.md).
            outputs: region_outputs(models).map(str::to_owned).to_vec(),
        };
        let response = self.infer(request).await?;
        decode_region(&response, models)
    }

    /// Probes every endpoint now (no cache: a server that just stopped shows at once),
    /// then asks a ready one about the models.
    async fn health(&self) -> InferenceHealth {
        let endpoints: Vec<EndpointHealth> = self.triton.probe().await.into_iter().map(endpoint_health).collect();
        let server_ready = endpoints.iter().any(|endpoint| endpoint.ready);
        if !server_ready {
            let error = endpoints.iter().find_map(|endpoint| endpoint.last_error.clone());
            return InferenceHealth { ready: false, server_ready, models: Vec::new(), endpoints, error };
        }
        let mut models = Vec::new();
        let mut error = None;
        let required_faces = self.faces.index_on_ingest;
        // Region search is one endpoint among many: without its model the rest still works.
        let wanted = [
            (&self.models.ingest_model, true),
            (&self.models.text_model, true),
            (&self.models.region_model, false),
            (&self.faces.model, required_faces),
        ]
        .into_iter()
        .chain(self.faces.component_models.iter().map(|name| (name, required_faces)));
        for (name, required) in wanted {
            let ready = match self.triton.model_ready(name).await {
                Ok(ready) => ready,
                Err(err) => {
                    error.get_or_insert(err.to_string());
                    false
                }
            };
            models.push(ModelHealth { name: name.clone(), ready, required });
        }
        let ready = server_ready && models.iter().all(|m| m.ready || !m.required);
        InferenceHealth { ready, server_ready, models, endpoints, error }
    }
}

fn endpoint_health(status: EndpointStatus) -> EndpointHealth {
    EndpointHealth {
        endpoint: status.endpoint,
        ready: status.ready,
        in_flight: status.in_flight,
        taken_out: status.taken_out,
        last_error: status.last_error,
    }
}

/// Turns the ensemble's tensors (each with a leading batch dimension of 1) into an
/// `ImageAnalysis`: the first `num_dets` rows of every per-detection tensor, invalid rows
/// (`box_valid` false) and detections under the confidence floor left out.
pub fn decode_ingest(response: &InferResponse, models: &ModelsConfig) -> Result<ImageAnalysis, InferenceError> {
    let contract = |reason: String| InferenceError::Contract { model: models.ingest_model.clone(), reason };
    let dim = models.embedding_dim;

    let num_dets = response.output(&models.num_dets_output)?.as_i32()?;
    let count = match num_dets.as_slice() {
        [n] if *n >= 0 => *n as usize,
        other => return Err(contract(format!("{:?} must hold one count >= 0, got {other:?}", models.num_dets_output))),
    };
    let rows = |name: &str, len: usize, width: usize| -> Result<(), InferenceError> {
        if !len.is_multiple_of(width) || len / width < count {
            return Err(contract(format!(
                "{name:?} has {len} values: not {count} rows of {width} (num_dets = {count})"
            )));
        }
        Ok(())
    };
    let boxes = response.output(&models.boxes_output)?.as_f32()?;
    rows(&models.boxes_output, boxes.len(), 4)?;
    let scores = response.output(&models.scores_output)?.as_f32()?;
    rows(&models.scores_output, scores.len(), 1)?;
    let classes = response.output(&models.classes_output)?.as_i32()?;
    rows(&models.classes_output, classes.len(), 1)?;
    let box_embeddings = response.output(&models.box_embeddings_output)?.as_f32()?;
    rows(&models.box_embeddings_output, box_embeddings.len(), dim)?;
    let valid = response.output(&models.box_valid_output)?.as_bool()?;
    rows(&models.box_valid_output, valid.len(), 1)?;

    let embedding = response.output(&models.embedding_output)?.as_f32()?;
    if embedding.len() != dim {
        return Err(contract(format!(
            "{:?} has {} values, expected models.embedding_dim = {dim}",
            models.embedding_output,
            embedding.len()
        )));
    }
    let embedding =
        normalized(embedding).ok_or_else(|| contract("the image embedding is zero or not finite".into()))?;

    let (width, height) = match response.outputs.iter().find(|o| o.name == models.image_size_output) {
        None => (0, 0),
        Some(size) => match size.as_i32()?.as_slice() {
            [h, w] if *h > 0 && *w > 0 => (*w as u32, *h as u32),
            other => return Err(contract(format!("{:?} must be [height, width] > 0, got {other:?}", size.name))),
        },
    };

    let mut detections = Vec::new();
    for i in 0..count {
        if !valid[i] || scores[i] < models.min_detection_confidence {
            continue;
        }
        let class_id =
            u32::try_from(classes[i]).ok().filter(|&id| (id as usize) < models.class_names.len()).ok_or_else(|| {
                contract(format!(
                    "class id {} is outside the {} configured class names",
                    classes[i],
                    models.class_names.len()
                ))
            })?;
        let row = box_embeddings[i * dim..(i + 1) * dim].to_vec();
        let embedding = normalized(row).ok_or_else(|| {
            contract(format!("detection {i} is marked valid but its embedding is zero or not finite"))
        })?;
        let bbox = [boxes[i * 4], boxes[i * 4 + 1], boxes[i * 4 + 2], boxes[i * 4 + 3]];
        detections.push(Detection { class_id, confidence: scores[i], bbox, embedding });
    }
    Ok(ImageAnalysis { width, height, embedding, detections })
}

fn region_outputs(models: &ModelsConfig) -> [&str; 4] {
    [&models.image_size_output, &models.boxes_output, &models.box_embeddings_output, &models.box_valid_output]
}

/// Turns the region model's tensors for its one box into a `RegionAnalysis`; the embedding
/// is L2-normalised and `None` where `box_valid` is false.
pub fn decode_region(response: &InferResponse, models: &ModelsConfig) -> Result<RegionAnalysis, InferenceError> {
    let contract = |reason: String| InferenceError::Contract { model: models.region_model.clone(), reason };
    let (width, height) = match response.output(&models.image_size_output)?.as_i32()?.as_slice() {
        [h, w] if *h > 0 && *w > 0 => (*w as u32, *h as u32),
        other => {
            return Err(contract(format!("{:?} must be [height, width] > 0, got {other:?}", models.image_size_output)))
        }
    };
    let bbox = match response.output(&models.boxes_output)?.as_f32()?.as_slice() {
        &[x1, y1, x2, y2] => [x1, y1, x2, y2],
        other => return Err(contract(format!("{:?} must hold one box, got {other:?}", models.boxes_output))),
    };
    let valid = match response.output(&models.box_valid_output)?.as_bool()?.as_slice() {
        &[valid] => valid,
        other => return Err(contract(format!("{:?} must hold one flag, got {other:?}", models.box_valid_output))),
    };
    let row = response.output(&models.box_embeddings_output)?.as_f32()?;
    if row.len() != models.embedding_dim {
        return Err(contract(format!(
            "{:?} has {} values, expected one row of models.embedding_dim = {}",
            models.box_embeddings_output,
            row.len(),
            models.embedding_dim
        )));
    }
    let embedding = match valid {
        false => None,
        true => Some(
            normalized(row)
                .ok_or_else(|| contract("the box is marked valid but its embedding is zero or not finite".into()))?,
        ),
    };
    Ok(RegionAnalysis { width, height, bbox, embedding })
}

fn face_outputs(faces: &FacesConfig) -> [&str; 7] {
    [
        &faces.image_size_output,
        &faces.num_faces_output,
        &faces.boxes_output,
        &faces.scores_output,
        &faces.landmarks_output,
        &faces.embeddings_output,
        &faces.valid_output,
    ]
}

/// Turns `face_embed`'s tensors into a `FaceAnalysis`: the first `num_faces` rows, faces
/// under `faces.min_score` left out, boxes and landmarks scaled from `original` to the
/// photo's pixels, embeddings L2-normalised (and checked against `faces.embedding_dim`).
pub fn decode_faces(
    response: &InferResponse,
    faces: &FacesConfig,
    original_max_side: u32,
) -> Result<FaceAnalysis, InferenceError> {
    let contract = |reason: String| InferenceError::Contract { model: faces.model.clone(), reason };
    let dim = faces.embedding_dim;
    let (width, height) = match response.output(&faces.image_size_output)?.as_i32()?.as_slice() {
        [h, w] if *h > 0 && *w > 0 => (*w as u32, *h as u32),
        other => {
            return Err(contract(format!("{:?} must be [height, width] > 0, got {other:?}", faces.image_size_output)))
        }
    };
    let count = match response.output(&faces.num_faces_output)?.as_i32()?.as_slice() {
        [n] if *n >= 0 => *n as usize,
        other => return Err(contract(format!("{:?} must hold one count >= 0, got {other:?}", faces.num_faces_output))),
    };
    let rows = |name: &str, values: usize, width: usize| -> Result<(), InferenceError> {
        if !values.is_multiple_of(width) || values / width < count {
            return Err(contract(format!(
                "{name:?} has {values} values: not {count} rows of {width} (num_faces = {count})"
            )));
        }
        Ok(())
    };
    let boxes = response.output(&faces.boxes_output)?.as_f32()?;
    rows(&faces.boxes_output, boxes.len(), 4)?;
    let scores = response.output(&faces.scores_output)?.as_f32()?;
    rows(&faces.scores_output, scores.len(), 1)?;
    let landmarks = response.output(&faces.landmarks_output)?.as_f32()?;
    rows(&faces.landmarks_output, landmarks.len(), 10)?;
    let embeddings = response.output(&faces.embeddings_output)?.as_f32()?;
    rows(&faces.embeddings_output, embeddings.len(), dim)?;
    let valid = response.output(&faces.valid_output)?.as_bool()?;
    rows(&faces.valid_output, valid.len(), 1)?;

    // `original` is the photo with its longest side capped: the same rule as preprocess.
    let (original_width, original_height) = preprocess_core::geometry::capped_size(width, height, original_max_side);
    let (sx, sy) = (width as f32 / original_width as f32, height as f32 / original_height as f32);
    let mut detected = Vec::with_capacity(count);
    for i in 0..count {
        if scores[i] < faces.min_score {
            continue;
        }
        let detector_bbox = [boxes[i * 4], boxes[i * 4 + 1], boxes[i * 4 + 2], boxes[i * 4 + 3]];
        let bbox = [detector_bbox[0] * sx, detector_bbox[1] * sy, detector_bbox[2] * sx, detector_bbox[3] * sy];
        let points = &landmarks[i * 10..(i + 1) * 10];
        let detector_landmarks: [[f32; 2]; 5] = std::array::from_fn(|p| [points[2 * p], points[2 * p + 1]]);
        let landmarks = detector_landmarks.map(|[x, y]| [x * sx, y * sy]);
        let (embedding, raw_embedding) = match valid[i] {
            false => (None, None),
            true => {
                let raw = embeddings[i * dim..(i + 1) * dim].to_vec();
                let unit = normalized(raw.clone()).ok_or_else(|| {
                    contract(format!("face {i} is marked valid but its embedding is zero or not finite"))
                })?;
                (Some(unit), Some(raw))
            }
        };
        detected.push(DetectedFace {
            score: scores[i],
            bbox,
            detector_bbox,
            landmarks,
            detector_landmarks,
            embedding,
            raw_embedding,
        });
    }
    Ok(FaceAnalysis { width, height, faces: detected })
}

#[cfg(test)]
mod tests {
    use super::*;
    use triton_client::OutputTensor;

    fn tensor(name: &str, datatype: &str, shape: Vec<i64>, raw: Vec<u8>) -> OutputTensor {
        OutputTensor { name: name.into(), datatype: datatype.into(), shape, raw: raw.into() }
    }
    fn f32s(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
    fn i32s(values: &[i32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn models(dim: usize) -> ModelsConfig {
        ModelsConfig { embedding_dim: dim, ..ModelsConfig::default() }
    }

    /// Three detections (K = 4): the second invalid, the third below a 0.3 floor.
    fn response() -> InferResponse {
        let outputs = vec![
            tensor("num_dets", "INT32", vec![1, 1], i32s(&[3])),
            tensor(
                "boxes",
                "FP32",
                vec![1, 4, 4],
                f32s(&[1., 2., 3., 4., 0., 0., 0., 0., 5., 5., 9., 9., 0., 0., 0., 0.]),
            ),
            tensor("scores", "FP32", vec![1, 4], f32s(&[0.9, 0.8, 0.2, 0.0])),
            tensor("classes", "INT32", vec![1, 4], i32s(&[0, 2, 16, 0])),
            tensor("embedding", "FP32", vec![1, 2], f32s(&[3.0, 4.0])),
            tensor("box_embeddings", "FP32", vec![1, 3, 2], f32s(&[0., 2., 0., 0., 1., 1.])),
            tensor("box_valid", "BOOL", vec![1, 3], vec![1, 0, 1]),
            tensor("image_size", "INT32", vec![2], i32s(&[480, 640])),
        ];
        InferResponse { model: "visual_ingest".into(), outputs }
    }

    #[test]
    fn keeps_valid_rows_in_order_and_normalises() {
        let analysis = decode_ingest(&response(), &models(2)).unwrap();
        assert_eq!((analysis.width, analysis.height), (640, 480));
        assert_eq!(analysis.embedding, vec![0.6, 0.8]);
        assert_eq!(analysis.detections.len(), 2);
        assert_eq!(analysis.detections[0].bbox, [1., 2., 3., 4.]);
        assert_eq!(analysis.detections[0].embedding, vec![0.0, 1.0]);
        assert_eq!(analysis.detections[1].class_id, 16);
        assert_eq!(analysis.detections[1].bbox, [5., 5., 9., 9.]);
    }

    #[test]
    fn confidence_floor_drops_weak_detections() {
        let config = ModelsConfig { min_detection_confidence: 0.3, ..models(2) };
        let analysis = decode_ingest(&response(), &config).unwrap();
        assert_eq!(analysis.detections.len(), 1);
    }

    #[test]
    fn wrong_dimension_is_a_contract_error_naming_the_output() {
        let err = decode_ingest(&response(), &models(3)).unwrap_err().to_string();
        assert!(err.contains("box_embeddings") || err.contains("embedding"), "{err}");
    }

    #[test]
    fn more_dets_than_rows_is_rejected() {
        let mut response = response();
        response.outputs[0] = tensor("num_dets", "INT32", vec![1, 1], i32s(&[5]));
        let err = decode_ingest(&response, &models(2)).unwrap_err().to_string();
        assert!(err.contains("num_dets = 5"), "{err}");
    }

    #[test]
    fn unknown_class_id_is_rejected() {
        let mut response = response();
        response.outputs[3] = tensor("classes", "INT32", vec![1, 4], i32s(&[0, 2, 80, 0]));
        let err = decode_ingest(&response, &models(2)).unwrap_err().to_string();
        assert!(err.contains("class id 80"), "{err}");
    }

    #[test]
    fn missing_image_size_leaves_zero_size() {
        let mut response = response();
        response.outputs.pop();
        let analysis = decode_ingest(&response, &models(2)).unwrap();
        assert_eq!((analysis.width, analysis.height), (0, 0));
    }

    fn region_response(valid: bool, embedding: &[f32]) -> InferResponse {
        let outputs = vec![
            tensor("image_size", "INT32", vec![1, 2], i32s(&[480, 640])),
            tensor("boxes", "FP32", vec![1, 1, 4], f32s(&[10., 20., 110., 220.])),
            tensor("box_embeddings", "FP32", vec![1, 1, 2], f32s(embedding)),
            tensor("box_valid", "BOOL", vec![1, 1], vec![u8::from(valid)]),
        ];
        InferResponse { model: "region_embed".into(), outputs }
    }

    #[test]
    fn region_is_one_normalised_box_or_none() {
        let region = decode_region(&region_response(true, &[3., 4.]), &models(2)).unwrap();
        assert_eq!((region.width, region.height, region.bbox), (640, 480, [10., 20., 110., 220.]));
        assert_eq!(region.embedding, Some(vec![0.6, 0.8]));
        let rejected = decode_region(&region_response(false, &[0., 0.]), &models(2)).unwrap();
        assert_eq!(rejected.embedding, None);
        let err = decode_region(&region_response(true, &[0., 0.]), &models(2)).unwrap_err().to_string();
        assert!(err.contains("region_embed") && err.contains("marked valid"), "{err}");
        let err = decode_region(&region_response(true, &[3., 4.]), &models(3)).unwrap_err().to_string();
        assert!(err.contains("box_embeddings") && err.contains("embedding_dim = 3"), "{err}");
        let mut two_boxes = region_response(true, &[3., 4.]);
        two_boxes.outputs[1] = tensor("boxes", "FP32", vec![1, 2, 4], f32s(&[0.; 8]));
        let err = decode_region(&two_boxes, &models(2)).unwrap_err().to_string();
        assert!(err.contains("\"boxes\" must hold one box"), "{err}");
    }

    /// Two faces of a 4000 x 2000 photo (original capped to 1920 x 960): the second invalid.
    fn face_response() -> InferResponse {
        let outputs = vec![
            tensor("image_size", "INT32", vec![1, 2], i32s(&[2000, 4000])),
            tensor("num_faces", "INT32", vec![1, 1], i32s(&[2])),
            tensor(
                "face_boxes",
                "FP32",
                vec![1, 3, 4],
                f32s(&[96., 48., 192., 144., 10., 10., 20., 20., 0., 0., 0., 0.]),
            ),
            tensor("face_scores", "FP32", vec![1, 3], f32s(&[0.9, 0.6, 0.0])),
            tensor("face_landmarks", "FP32", vec![1, 3, 5, 2], f32s(&[[120., 96.]; 15].concat())),
            tensor("face_embeddings", "FP32", vec![1, 2, 2], f32s(&[0., 3., 0., 0.])),
            tensor("face_valid", "BOOL", vec![1, 2], vec![1, 0]),
        ];
        InferResponse { model: "face_embed".into(), outputs }
    }

    /// preprocess's cap in the shipped model repository.
    const ORIGINAL_MAX_SIDE: u32 = 1920;

    fn face_config(dim: usize) -> FacesConfig {
        FacesConfig { embedding_dim: dim, ..FacesConfig::default() }
    }

    #[test]
    fn faces_are_scaled_to_the_photo_and_invalid_ones_carry_no_embedding() {
        let analysis = decode_faces(&face_response(), &face_config(2), ORIGINAL_MAX_SIDE).unwrap();
        assert_eq!((analysis.width, analysis.height), (4000, 2000));
        assert_eq!(analysis.faces.len(), 2);
        let first = &analysis.faces[0];
        let scale = 4000.0 / ORIGINAL_MAX_SIDE as f32;
        assert_eq!(first.detector_bbox, [96., 48., 192., 144.]);
        assert_eq!(first.bbox, [96. * scale, 48. * scale, 192. * scale, 144. * scale]);
        assert_eq!(first.landmarks[4], [120. * scale, 96. * scale]);
        assert_eq!(first.detector_landmarks[4], [120., 96.]);
        assert_eq!(first.embedding, Some(vec![0.0, 1.0]));
        assert_eq!(first.raw_embedding, Some(vec![0.0, 3.0]));
        assert_eq!((&analysis.faces[1].embedding, &analysis.faces[1].raw_embedding), (&None, &None));
    }

    #[test]
    fn face_floor_and_contract_errors() {
        let config = FacesConfig { min_score: 0.7, ..face_config(2) };
        assert_eq!(decode_faces(&face_response(), &config, ORIGINAL_MAX_SIDE).unwrap().faces.len(), 1);
        let err = decode_faces(&face_response(), &face_config(3), ORIGINAL_MAX_SIDE).unwrap_err().to_string();
        assert!(err.contains("face_embeddings") && err.contains("num_faces = 2"), "{err}");
        let mut response = face_response();
        response.outputs[5] = tensor("face_embeddings", "FP32", vec![1, 2, 2], f32s(&[0., 0., 0., 0.]));
        let err = decode_faces(&response, &face_config(2), ORIGINAL_MAX_SIDE).unwrap_err().to_string();
        assert!(err.contains("face 0 is marked valid"), "{err}");
    }

    #[test]
    fn zero_vector_has_no_direction() {
        assert_eq!(normalized(vec![0.0, 0.0]), None);
        assert_eq!(normalized(vec![f32::NAN, 1.0]), None);
    }
}
