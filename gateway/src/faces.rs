//! Faces at the HTTP edge: POST /faces/embeddings (several photos through `face_embed`,
//! identical bytes analysed once, one error entry per bad photo, the aligned faces
//! re-created on request), POST /faces/rerank
//! (checks and ordering in `rerank`, scores from the configured `Scorer`), POST
//! /search/faces (the query face against the store's faces), and the faces ingest stores
//! when `faces.index_on_ingest` is on.
//!
//! The store holds one vector length (`models.embedding_dim`), shorter face embeddings are
//! zero-padded up to it (`store_vector`): padding changes neither norms nor dot products, so
//! the store's cosine is the faces' cosine.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::Multipart;
use base64::Engine;
use bytes::Bytes;
use crop_core::{face_to_rgb8, warp_face_into, FaceAligner, ImageView};
use futures_util::stream::{self, StreamExt};
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use preprocess_core::geometry::capped_size;
use preprocess_core::resample::resize_antialiased;
use preprocess_core::DecodeLimits;
use visual_store::{FaceRecord, Page, SearchFilter};

use crate::api::{
    file_url, FaceEmbeddingView, FaceEmbeddingsRequest, FaceEmbeddingsResponse, FaceImageResult, FaceOptions,
    FaceResult, RerankDiagnostics, RerankHit, RerankRequest, RerankResponse,
};
use crate::blobs::content_id;
use crate::error::AppError;
use crate::pipeline::{normalized, DetectedFace, FaceAnalysis, ImageAnalysis, PipelineError};
use crate::rerank::{self, RerankError, RerankLimits};
use crate::state::AppState;

/// One image of a /faces/embeddings request: its bytes, or why they could not be read.
pub struct FaceUpload {
    pub name: Option<String>,
    pub bytes: Result<Bytes, AppError>,
}

fn too_many(count: usize, max: usize) -> AppError {
    AppError::BadRequest(format!("{count} images in one request; the limit is {max} (faces.max_images_per_request)"))
}

fn parse_flag(name: &str, text: &str) -> Result<bool, AppError> {
    match text.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        other => Err(AppError::BadRequest(format!("{name} must be true or false, got {other:?}"))),
    }
}

/// The multipart form: `image` (or `images`) files, repeated, and the option fields.
pub async fn read_form(
    mut multipart: Multipart,
    max_images: usize,
) -> Result<(Vec<FaceUpload>, FaceOptions), AppError> {
    let mut uploads = Vec::new();
    let mut options = FaceOptions::default();
    while let Some(field) = multipart.next_field().await? {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "image" | "images" => {
                if uploads.len() == max_images {
                    return Err(too_many(max_images + 1, max_images));
                }
                let filename = field.file_name().map(str::to_owned);
                uploads.push(FaceUpload { name: filename, bytes: Ok(field.bytes().await?) });
            }
            "aligned_faces" => options.aligned_faces = parse_flag(&name, &field.text().await?)?,
            "raw_embeddings" => options.raw_embeddings = parse_flag(&name, &field.text().await?)?,
            "raw_boxes" => options.raw_boxes = parse_flag(&name, &field.text().await?)?,
            other => {
                return Err(AppError::BadRequest(format!(
                    "unknown form field {other:?}; expected image, aligned_faces, raw_embeddings, raw_boxes"
                )))
            }
        }
    }
    Ok((uploads, options))
}

/// The JSON form: base64 images; one that is not valid base64 becomes its own error entry.
pub fn read_json(
    request: FaceEmbeddingsRequest,
    max_images: usize,
) -> Result<(Vec<FaceUpload>, FaceOptions), AppError> {
    if request.images.len() > max_images {
        return Err(too_many(request.images.len(), max_images));
    }
    let uploads = request
        .images
        .into_iter()
        .map(|image| FaceUpload {
            name: image.name,
            bytes: base64::engine::general_purpose::STANDARD
                .decode(image.data.trim())
                .map(Bytes::from)
                .map_err(|err| AppError::BadRequest(format!("data is not valid base64: {err}"))),
        })
        .collect();
    Ok((uploads, request.options))
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

async fn analyze(state: &AppState, image: Bytes, options: &FaceOptions) -> Result<AnalyzedPhoto, AppError> {
    let analysis = state.inference.analyze_faces(image.clone()).await?;
    let aligned = match options.aligned_faces {
        true => Some(aligned_faces(state, image, &analysis.faces).await?),
        false => None,
    };
    Ok(AnalyzedPhoto { analysis, aligned })
}

/// The faces as face_align gave them to the encoder, re-created here rather than shipped
/// out of Triton: the photo decoded and capped as preprocess makes `original`, each face
/// warped from its `original`-frame landmarks with the align model's own settings.
async fn aligned_faces(
    state: &AppState,
    image: Bytes,
    faces: &[DetectedFace],
) -> Result<Vec<Option<String>>, AppError> {
    if faces.is_empty() {
        return Ok(Vec::new());
    }
    let aligner = state.inference.face_aligner().await?;
    let landmarks: Vec<[[f32; 2]; 5]> = faces.iter().map(|face| face.detector_landmarks).collect();
    let config = &state.config.faces;
    let limits = DecodeLimits { max_bytes: config.max_image_bytes, max_pixels: config.max_image_pixels };
    let original_max_side = config.original_max_side;
    // Decoding and warping are CPU work: off the async workers.
    tokio::task::spawn_blocking(move || render_aligned_faces(&image, &landmarks, &aligner, limits, original_max_side))
        .await
        .map_err(|err| AppError::Internal(format!("aligning faces: {err}")))?
}

fn render_aligned_faces(
    image: &[u8],
    landmarks: &[[[f32; 2]; 5]],
    aligner: &FaceAligner,
    limits: DecodeLimits,
    original_max_side: u32,
) -> Result<Vec<Option<String>>, AppError> {
    let decoded = preprocess_core::decode(image, &limits).map_err(|err| AppError::Unprocessable(err.to_string()))?;
    // preprocess's `original`: the decoded photo, or its antialiased copy when over the cap.
    let (width, height) = capped_size(decoded.width, decoded.height, original_max_side);
    let original = match (width, height) == (decoded.width, decoded.height) {
        true => decoded,
        false => resize_antialiased(&decoded, width, height).map_err(|err| AppError::Internal(err.to_string()))?,
    };
    let (width, height) = (original.width as usize, original.height as usize);
    let view = ImageView::new(&original.pixels, width, height).map_err(|err| AppError::Internal(err.to_string()))?;
    let mut face = vec![0.0; aligner.face_len()];
    landmarks
        .iter()
        .map(|&points| {
            // Rejected here exactly when face_align rejected them: same settings, same frame.
            let Ok(map) = aligner.plan(points, width, height) else { return Ok(None) };
            warp_face_into(&view, &map, aligner.size, &mut face);
            png_base64(&face_to_rgb8(&face, aligner.size), aligner.size).map(Some)
        })
        .collect()
}

/// A square RGB8 picture as base64 PNG.
fn png_base64(rgb: &[u8], side: usize) -> Result<String, AppError> {
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(rgb, side as u32, side as u32, ExtendedColorType::Rgb8)
        .map_err(|err| AppError::Internal(format!("encoding an aligned face as PNG: {err}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(png))
}

/// Checks one upload's size; the first of identical bytes is analysed, later ones point to it.
enum Planned {
    Failed(AppError),
    Analyze { id: String },
    DuplicateOf { index: usize, id: String },
}

fn plan(uploads: &[FaceUpload], max_image_bytes: usize) -> Vec<Planned> {
    let mut first_by_id: HashMap<String, usize> = HashMap::new();
    uploads
        .iter()
        .enumerate()
        .map(|(index, upload)| match &upload.bytes {
            Err(err) => Planned::Failed(AppError::BadRequest(err.to_string())),
            Ok(bytes) if bytes.is_empty() => Planned::Failed(AppError::BadRequest("the image is empty".into())),
            Ok(bytes) if bytes.len() > max_image_bytes => Planned::Failed(AppError::PayloadTooLarge(format!(
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

/// POST /faces/embeddings after the form is read: distinct photos analysed concurrently
/// (`server.batch_concurrency`), results in request order.
pub async fn embeddings(state: &AppState, uploads: Vec<FaceUpload>, options: FaceOptions) -> FaceEmbeddingsResponse {
    let started = Instant::now();
    let planned = plan(&uploads, state.config.faces.max_image_bytes);
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
    let analyses: HashMap<usize, Result<AnalyzedPhoto, AppError>> = stream::iter(jobs)
        .map(|(index, bytes)| async move { (index, analyze(state, bytes, options).await) })
        .buffer_unordered(state.config.server.batch_concurrency)
        .collect()
        .await;

    let results: Vec<FaceImageResult> = planned
        .into_iter()
        .zip(uploads)
        .enumerate()
        .map(|(index, (planned, upload))| {
            let entry = |image_id, duplicate_of, outcome: Result<&AnalyzedPhoto, &AppError>| match outcome {
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
        embedding_dim: state.config.faces.embedding_dim,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
        results,
    }
}

/// POST /faces/rerank: check, score with the configured scorer, threshold, sort.
pub fn rerank(state: &AppState, request: &RerankRequest) -> Result<RerankResponse, AppError> {
    let started = Instant::now();
    let faces = &state.config.faces;
    let limits = RerankLimits { max_candidates: faces.max_rerank_candidates, max_dim: faces.max_rerank_dim };
    let candidates: Vec<(&str, &[f32])> =
        request.candidates.iter().map(|c| (c.id.as_str(), c.embedding.as_slice())).collect();
    let outcome = rerank::check(&request.query, &candidates, request.threshold, faces.rerank_threshold, limits)
        .and_then(|checked| Ok((state.scorer.score(&request.query, &checked)?, checked)));
    let (scores, checked) = match outcome {
        Ok(scored) => scored,
        Err(err) => {
            state.metrics.observe_rerank(state.scorer.kind(), None);
            return Err(match err {
                RerankError::Invalid(message) => AppError::BadRequest(message),
                RerankError::Plugin(err) => AppError::Internal(err.to_string()),
            });
        }
    };
    let results: Vec<RerankHit> = rerank::rank(&scores, checked.threshold)
        .into_iter()
        .map(|ranked| RerankHit { id: request.candidates[ranked.index].id.clone(), score: ranked.score })
        .collect();
    let elapsed = started.elapsed();
    state.metrics.observe_rerank(state.scorer.kind(), Some(elapsed));
    Ok(RerankResponse {
        diagnostics: RerankDiagnostics {
            scorer: state.scorer.name(),
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
pub async fn query_from_photo(state: &AppState, image: Bytes) -> Result<Vec<f32>, AppError> {
    let analysis = state.inference.analyze_faces(image).await?;
    // face_detect ranks best first; max_by keeps that independent of the order.
    analysis
        .faces
        .into_iter()
        .filter_map(|face| face.embedding.map(|embedding| (face.score, embedding)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, embedding)| embedding)
        .ok_or_else(|| AppError::Unprocessable("no face with usable landmarks was found in the query photo".into()))
}

/// The query of a face search from a JSON embedding: right length, finite, normalised.
pub fn query_from_embedding(state: &AppState, embedding: Vec<f32>) -> Result<Vec<f32>, AppError> {
    let dim = state.config.faces.embedding_dim;
    if embedding.len() != dim {
        return Err(AppError::BadRequest(format!(
            "the face embedding has {} values; faces.embedding_dim is {dim}",
            embedding.len()
        )));
    }
    normalized(embedding)
        .ok_or_else(|| AppError::BadRequest("the face embedding has a NaN or infinite value, or is all zeros".into()))
}

/// Face-level k-NN over the stored faces; each hit names its image and face box; one store call.
pub async fn search(
    state: &AppState,
    query: Vec<f32>,
    page: Page,
    min_score: f32,
) -> Result<Vec<FaceResult>, AppError> {
    let query = store_vector(query, state.config.models.embedding_dim);
    let hits = state.store.search_faces(&query, &SearchFilter::default(), page).await?;
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
    state: &AppState,
    image: Bytes,
) -> Result<(ImageAnalysis, Vec<FaceRecord>), PipelineError> {
    if !state.config.faces.index_on_ingest {
        return Ok((state.inference.analyze_image(image).await?, Vec::new()));
    }
    let (analysis, faces) =
        tokio::try_join!(state.inference.analyze_image(image.clone()), state.inference.analyze_faces(image))?;
    let store_dim = state.config.models.embedding_dim;
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
            FaceUpload { name: None, bytes: Err(AppError::BadRequest("data is not valid base64".into())) },
        ];
        let planned = plan(&uploads, 10);
        assert!(matches!(planned[0], Planned::Analyze { .. }));
        assert!(matches!(planned[1], Planned::Analyze { .. }));
        assert!(matches!(planned[2], Planned::DuplicateOf { index: 0, .. }));
        assert!(matches!(&planned[3], Planned::Failed(err) if err.to_string().contains("empty")));
        assert!(
            matches!(&planned[4], Planned::Failed(err) if err.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert!(matches!(&planned[5], Planned::Failed(err) if err.to_string().contains("base64")));
    }

    #[test]
    fn json_images_are_base64_and_limited() {
        let request: FaceEmbeddingsRequest = serde_json::from_value(serde_json::json!({
            "images": [{"name": "a.jpg", "data": "aGVsbG8="}, {"data": "not base64!"}],
            "options": {"raw_boxes": true}
        }))
        .unwrap();
        let (uploads, options) = read_json(request.clone(), 2).unwrap();
        assert_eq!(uploads[0].bytes.as_ref().unwrap().as_ref(), b"hello");
        assert_eq!(uploads[0].name.as_deref(), Some("a.jpg"));
        assert!(uploads[1].bytes.is_err());
        assert!(options.raw_boxes);
        let err = read_json(request, 1).err().expect("over the limit").to_string();
        assert!(err.contains("the limit is 1"), "{err}");
        assert!(
            serde_json::from_value::<FaceEmbeddingsRequest>(serde_json::json!({"images": [], "colour": 1})).is_err()
        );
    }

    #[test]
    fn flags_are_strict() {
        assert!(parse_flag("raw_boxes", "yes").is_err());
        assert!(parse_flag("raw_boxes", "1").unwrap());
    }

    fn png(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PngEncoder::new(&mut out).write_image(pixels, width, height, ExtendedColorType::Rgb8).unwrap();
        out
    }

    fn decoded_png(base64_png: &str) -> image::RgbImage {
        let bytes = base64::engine::general_purpose::STANDARD.decode(base64_png).unwrap();
        image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap().into_rgb8()
    }

    /// Landmarks that are the template moved by whole pixels: the aligned face is the photo's
    /// pixels in that window (the similarity is a pure translation).
    #[test]
    fn aligned_face_is_the_window_the_landmarks_select() {
        let (width, height) = (200u32, 160u32);
        let pixels: Vec<u8> = (0..width * height * 3).map(|i| (i * 7919 % 251) as u8).collect();
        let photo = png(width, height, &pixels);
        let aligner = FaceAligner::new(crop_core::ARCFACE_TEMPLATE_112, 112, 0.1, 1.0, 0.05).unwrap();
        let (dx, dy) = (30, 20);
        let shifted = crop_core::ARCFACE_TEMPLATE_112.map(|[x, y]| [x + dx as f32, y + dy as f32]);
        let coincident = [[50.0, 60.0]; 5];
        let limits = DecodeLimits { max_bytes: 1 << 20, max_pixels: 1 << 20 };
        let crops = render_aligned_faces(&photo, &[shifted, coincident], &aligner, limits, 1920).unwrap();
        assert_eq!(crops.len(), 2);
        assert_eq!(crops[1], None, "rejected landmarks have no crop");
        let face = decoded_png(crops[0].as_ref().unwrap());
        assert_eq!(face.dimensions(), (112, 112));
        for (u, v, pixel) in face.enumerate_pixels() {
            let at = (((v + dy) * width + u + dx) * 3) as usize;
            assert_eq!(pixel.0, [pixels[at], pixels[at + 1], pixels[at + 2]], "({u}, {v})");
        }

        // Over the cap, the landmarks are in the capped `original`: the window is read there.
        let crops = render_aligned_faces(&photo, &[shifted], &aligner, limits, 180).unwrap();
        let decoded = preprocess_core::decode(&photo, &limits).unwrap();
        let original = resize_antialiased(&decoded, 180, 144).unwrap();
        let face = decoded_png(crops[0].as_ref().unwrap());
        let at = (((5 + dy) * 180 + 7 + dx) * 3) as usize;
        assert_eq!(face.get_pixel(7, 5).0, [original.pixels[at], original.pixels[at + 1], original.pixels[at + 2]]);

        let err = render_aligned_faces(b"not a photo", &[shifted], &aligner, limits, 1920).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
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
