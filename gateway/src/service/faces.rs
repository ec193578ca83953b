//! Faces: several photos through `face_embed` (identical bytes analysed once, one error
//! entry per bad photo, the aligned faces re-created on request), rerank of a caller's
//! candidates (checks and ordering in `rerank`, scores from the configured `Scorer`),
//! face search against the store's faces, and the faces ingest stores when
//! `faces.index_on_ingest` is on.
//!
//! The store holds one vector length (`models.embedding_dim`), shorter face embeddings are
//! zero-padded up to it (`store_vector`): padding changes neither norms nor dot products, so
//! the store's cosine is the faces' cosine.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use visual_store::{FaceRecord, Page, SearchFilter, Store};

use crate::api::{
    file_url, FaceEmbeddingView, FaceEmbeddingsResponse, FaceImageResult, FaceOptions, FaceResult, RerankDiagnostics,
    RerankHit, RerankRequest, RerankResponse,
};
use crate::blobs::content_id;
use crate::config::FacesConfig;
use crate::inference::{normalized, DetectedFace, FaceAnalysis, ImageAnalysis, Inference, InferenceError};
use crate::metrics::Metrics;
use crate::rerank::{self, RerankError, RerankLimits, Scorer};
use crate::service::aligned_faces::aligned_faces;
use crate::service::pixel_budget::PixelBudget;
use crate::service::ServiceError;

/// One image of a /faces/embeddings request: its bytes, or why they could not be read.
pub struct FaceUpload {
    pub name: Option<String>,
    pub bytes: Result<Bytes, ServiceError>,
}

/// Whether ingest stores faces, and the store's vector length they are padded to.
#[derive(Clone, Copy, Debug)]
pub struct FaceIndexing {
    pub enabled: bool,
    pub store_dim: usize,
}

/// `aligned`: the face's aligned crop when `aligned_faces` was asked for.
fn face_view(
    index: usize,
    face: &DetectedFace,
    aligned: Option<&Option<String>>,
    options: &FaceOptions,
) -> FaceEmbeddingView {
    FaceEmbeddingView {
        index,
        score: face.score,
        bbox: face.bbox,
        landmarks: face.landmarks,
        embedding: match options.raw_embeddings {
            true => face.raw_embedding.clone(),
            false => face.embedding.clone(),
        },
        detector_bbox: options.raw_boxes.then_some(face.detector_bbox),
        aligned_face_png: aligned.cloned(),
    }
}

/// One analysed photo: its faces and, with `aligned_faces`, each face's aligned crop
/// (base64 PNG, `None` where the landmarks were rejected) in the order of `analysis.faces`.
struct AnalyzedPhoto {
    analysis: FaceAnalysis,
    aligned: Option<Vec<Option<String>>>,
}

async fn analyze(
    inference: &dyn Inference,
    budget: &PixelBudget,
    image: Bytes,
    options: &FaceOptions,
    max_image_bytes: usize,
) -> Result<AnalyzedPhoto, ServiceError> {
    let analysis = inference.analyze_faces(image.clone()).await?;
    let aligned = match options.aligned_faces {
        true => Some(aligned_faces(inference, budget, image, &analysis.faces, max_image_bytes).await?),
        false => None,
    };
    Ok(AnalyzedPhoto { analysis, aligned })
}

/// Checks one upload's size; the first of identical bytes is analysed, later ones point to it.
enum Planned {
    Failed(ServiceError),
    Analyze { id: String },
    DuplicateOf { index: usize, id: String },
}

fn plan(uploads: &[FaceUpload], max_image_bytes: usize) -> Vec<Planned> {
    let mut first_by_id: HashMap<String, usize> = HashMap::new();
    uploads
        .iter()
        .enumerate()
        .map(|(index, upload)| match &upload.bytes {
            Err(err) => Planned::Failed(ServiceError::BadRequest(err.to_string())),
            Ok(bytes) if bytes.is_empty() => Planned::Failed(ServiceError::BadRequest("the image is empty".into())),
            Ok(bytes) if bytes.len() > max_image_bytes => Planned::Failed(ServiceError::PayloadTooLarge(format!(
                "the image has {} bytes; the limit is {max_image_bytes} (faces.max_image_bytes)",
                bytes.len()
            ))),
            Ok(bytes) => {
                let id = content_id(bytes);
                match first_by_id.get(&id) {
                    Some(&first) => Planned::DuplicateOf { index: first, id },
                    None => {
                        first_by_id.insert(id.clone(), index);
                        Planned::Analyze { id }
                    }
                }
            }
        })
        .collect()
}

/// The faces of several photos: distinct photos analysed `concurrency` at a time
/// (`server.batch_concurrency`), results in request order.
pub async fn embeddings(
    inference: &dyn Inference,
    budget: &PixelBudget,
    config: &FacesConfig,
    concurrency: usize,
    uploads: Vec<FaceUpload>,
    options: FaceOptions,
) -> FaceEmbeddingsResponse {
    let started = Instant::now();
    let planned = plan(&uploads, config.max_image_bytes);
    let jobs: Vec<(usize, Bytes)> = planned
        .iter()
        .zip(&uploads)
        .enumerate()
        .filter_map(|(index, (planned, upload))| match (planned, &upload.bytes) {
            (Planned::Analyze { .. }, Ok(bytes)) => Some((index, bytes.clone())),
            _ => None,
        })
        .collect();
    let analyzed = jobs.len();
    let options = &options;
    let analyses: HashMap<usize, Result<AnalyzedPhoto, ServiceError>> = stream::iter(jobs)
        .map(|(index, bytes)| async move {
            (index, analyze(inference, budget, bytes, options, config.max_image_bytes).await)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;

    let results: Vec<FaceImageResult> = planned
        .into_iter()
        .zip(uploads)
        .enumerate()
        .map(|(index, (planned, upload))| {
            let entry = |image_id, duplicate_of, outcome: Result<&AnalyzedPhoto, &ServiceError>| match outcome {
                Ok(AnalyzedPhoto { analysis, aligned }) => FaceImageResult {
                    index,
                    name: upload.name.clone(),
                    image_id,
                    status: "ok",
                    duplicate_of,
                    width: Some(analysis.width),
                    height: Some(analysis.height),
                    faces: analysis
                        .faces
                        .iter()
                        .enumerate()
                        .filter(|(_, face)| options.raw_boxes || face.embedding.is_some())
                        .enumerate()
                        .map(|(i, (k, face))| face_view(i, face, aligned.as_ref().map(|crops| &crops[k]), options))
                        .collect(),
                    error: None,
                    http_status: 200,
                },
                Err(err) => FaceImageResult {
                    index,
                    name: upload.name.clone(),
                    image_id,
                    status: "failed",
                    duplicate_of,
                    width: None,
                    height: None,
                    faces: Vec::new(),
                    error: Some(err.to_string()),
                    http_status: err.status().as_u16(),
                },
            };
            match planned {
                Planned::Failed(err) => entry(upload.bytes.as_ref().ok().map(|b| content_id(b)), None, Err(&err)),
                Planned::Analyze { id } => entry(Some(id), None, analyses[&index].as_ref()),
                Planned::DuplicateOf { index: first, id } => entry(Some(id), Some(first), analyses[&first].as_ref()),
            }
        })
        .collect();
    FaceEmbeddingsResponse {
        images: results.len(),
        analyzed,
        failed: results.iter().filter(|r| r.status == "failed").count(),
        faces: results.iter().map(|r| r.faces.len()).sum(),
        embedding_dim: config.embedding_dim,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
        results,
    }
}

/// Rerank: check, score with the configured scorer, threshold, sort.
pub fn rerank(
    scorer: &Scorer,
    metrics: &Metrics,
    faces: &FacesConfig,
    request: &RerankRequest,
) -> Result<RerankResponse, ServiceError> {
    let started = Instant::now();
    let limits = RerankLimits { max_candidates: faces.max_rerank_candidates, max_dim: faces.max_rerank_dim };
    let candidates: Vec<(&str, &[f32])> =
        request.candidates.iter().map(|c| (c.id.as_str(), c.embedding.as_slice())).collect();
    let outcome = rerank::check(&request.query, &candidates, request.threshold, faces.rerank_threshold, limits)
        .and_then(|checked| Ok((scorer.score(&request.query, &checked)?, checked)));
    let (scores, checked) = match outcome {
        Ok(scored) => scored,
        Err(err) => {
            metrics.observe_rerank(scorer.kind(), None);
            return Err(match err {
                RerankError::Invalid(message) => ServiceError::BadRequest(message),
                RerankError::Plugin(err) => ServiceError::Internal(err.to_string()),
            });
        }
    };
    let results: Vec<RerankHit> = rerank::rank(&scores, checked.threshold)
        .into_iter()
        .map(|ranked| RerankHit { id: request.candidates[ranked.index].id.clone(), score: ranked.score })
        .collect();
    let elapsed = started.elapsed();
    metrics.observe_rerank(scorer.kind(), Some(elapsed));
    Ok(RerankResponse {
        diagnostics: RerankDiagnostics {
            scorer: scorer.name(),
            threshold: checked.threshold,
            candidates: request.candidates.len(),
            returned: results.len(),
            dim: checked.dim,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
        },
        results,
    })
}

/// A face embedding in the store's vector length: zero-padded (see the module doc).
pub fn store_vector(mut embedding: Vec<f32>, store_dim: usize) -> Vec<f32> {
    // Config validation rejects a longer face vector only with faces.index_on_ingest on; with it
    // off a face query longer than the store's vectors would be cut here (debug builds stop).
    debug_assert!(embedding.len() <= store_dim, "face embedding longer than the store's vectors");
    embedding.resize(store_dim, 0.0);
    embedding
}

/// The query of a face search from a photo: its highest-scoring face with an embedding.
pub async fn query_from_photo(inference: &dyn Inference, image: Bytes) -> Result<Vec<f32>, ServiceError> {
    let analysis = inference.analyze_faces(image).await?;
    // face_detect ranks best first; max_by keeps that independent of the order.
    analysis
        .faces
        .into_iter()
        .filter_map(|face| face.embedding.map(|embedding| (face.score, embedding)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, embedding)| embedding)
        .ok_or_else(|| ServiceError::Unprocessable("no face with usable landmarks was found in the query photo".into()))
}

/// The query of a face search from a JSON embedding: right length, finite, normalised.
/// `dim` is `faces.embedding_dim`.
pub fn query_from_embedding(embedding: Vec<f32>, dim: usize) -> Result<Vec<f32>, ServiceError> {
    if embedding.len() != dim {
        return Err(ServiceError::BadRequest(format!(
            "the face embedding has {} values; faces.embedding_dim is {dim}",
            embedding.len()
        )));
    }
    normalized(embedding).ok_or_else(|| {
        ServiceError::BadRequest("the face embedding has a NaN or infinite value, or is all zeros".into())
    })
}

/// Face-level k-NN over the stored faces; each hit names its image and face box; one store call.
/// `store_dim` is `models.embedding_dim`.
pub async fn search(
    store: &dyn Store,
    store_dim: usize,
    query: Vec<f32>,
    page: Page,
    min_score: f32,
) -> Result<Vec<FaceResult>, ServiceError> {
    let query = store_vector(query, store_dim);
    let hits = store.search_faces(&query, &SearchFilter::default(), page).await?;
    Ok(hits
        .into_iter()
        .filter(|h| h.score >= min_score)
        .map(|hit| FaceResult {
            file_url: file_url(&hit.image_id),
            image_id: hit.image_id,
            face_index: hit.face_index,
            bbox: hit.bbox,
            score: hit.score,
            width: hit.width,
            height: hit.height,
        })
        .collect())
}

/// What ingest stores for one photo: the `visual_ingest` analysis, and with
/// `faces.index_on_ingest` its faces from one `face_embed` call made at the same time.
pub async fn analyze_for_ingest(
    inference: &dyn Inference,
    indexing: FaceIndexing,
    image: Bytes,
) -> Result<(ImageAnalysis, Vec<FaceRecord>), InferenceError> {
    if !indexing.enabled {
        return Ok((inference.analyze_image(image).await?, Vec::new()));
    }
    let (analysis, faces) = tokio::try_join!(inference.analyze_image(image.clone()), inference.analyze_faces(image))?;
    let store_dim = indexing.store_dim;
    let records = faces
        .faces
        .into_iter()
        .filter_map(|face| {
            let embedding = store_vector(face.embedding?, store_dim);
            Some(FaceRecord { confidence: face.score, bbox: face.bbox, landmarks: face.landmarks, embedding })
        })
        .collect();
    Ok((analysis, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(bytes: &[u8]) -> FaceUpload {
        FaceUpload { name: None, bytes: Ok(Bytes::copy_from_slice(bytes)) }
    }

    #[test]
    fn identical_bytes_are_planned_once_and_bad_ones_fail_alone() {
        let uploads = vec![
            upload(b"photo-a"),
            upload(b"photo-b"),
            upload(b"photo-a"),
            upload(b""),
            upload(b"a photo that is too long"),
            FaceUpload { name: None, bytes: Err(ServiceError::BadRequest("data is not valid base64".into())) },
        ];
        let planned = plan(&uploads, 10);
        assert!(matches!(planned[0], Planned::Analyze { .. }));
        assert!(matches!(planned[1], Planned::Analyze { .. }));
        assert!(matches!(planned[2], Planned::DuplicateOf { index: 0, .. }));
        assert!(matches!(&planned[3], Planned::Failed(err) if err.to_string().contains("empty")));
        assert!(matches!(&planned[4], Planned::Failed(err) if err.status() == http::StatusCode::PAYLOAD_TOO_LARGE));
        assert!(matches!(&planned[5], Planned::Failed(err) if err.to_string().contains("base64")));
    }

    #[test]
    fn padding_keeps_the_cosine() {
        let (a, b) = (vec![0.6, 0.8], vec![1.0, 0.0]);
        let cosine: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let (pa, pb) = (store_vector(a, 5), store_vector(b, 5));
        assert_eq!(pa, vec![0.6, 0.8, 0.0, 0.0, 0.0]);
        assert_eq!(pa.iter().zip(&pb).map(|(x, y)| x * y).sum::<f32>(), cosine);
    }
}
