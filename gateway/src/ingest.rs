//! Ingest: the multipart upload form (images, tags, metadata, created_at), and storing
//! a photo: id = SHA-256 of its bytes; a photo already stored is answered without a
//! Triton call; otherwise the ensemble's analysis (and, with face indexing on, the photo's
//! faces: `faces::analyze_for_ingest`) becomes an `ImageRecord`, the file is
//! written (durably) before the record, so every acknowledged id has its photo.

use std::collections::HashSet;

use axum::extract::Multipart;
use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use visual_store::{FaceRecord, ImageRecord, ObjectRecord, PutOutcome};

use crate::api::{BatchItem, BatchResponse, DateBound, IngestResult};
use crate::blobs::content_id;
use crate::error::AppError;
use crate::faces::analyze_for_ingest;
use crate::metrics::IngestOutcome;
use crate::pipeline::ImageAnalysis;
use crate::search::date_bound;
use crate::state::AppState;

const MAX_TAGS: usize = 64;
const MAX_TAG_CHARS: usize = 100;

pub struct Upload {
    pub filename: Option<String>,
    pub bytes: Bytes,
}

/// What a client sends with its photos; in a batch it applies to every photo.
#[derive(Debug, Default, PartialEq)]
pub struct IngestFields {
    pub tags: Vec<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: Option<i64>,
}

pub struct IngestForm {
    pub uploads: Vec<Upload>,
    pub fields: IngestFields,
}

/// Reads the whole form: fields may come in any order, and nothing is stored before
/// every field is known to be valid.
pub async fn read_form(mut multipart: Multipart) -> Result<IngestForm, AppError> {
    let mut uploads = Vec::new();
    let mut raw_tags = Vec::new();
    let mut metadata = None;
    let mut created_at = None;
    while let Some(field) = multipart.next_field().await? {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "image" | "images" => {
                let filename = field.file_name().map(str::to_owned);
                uploads.push(Upload { filename, bytes: field.bytes().await? });
            }
            "tags" => raw_tags.push(field.text().await?),
            "metadata" => metadata = Some(field.text().await?),
            "created_at" => created_at = Some(field.text().await?),
            other => {
                return Err(AppError::BadRequest(format!(
                    "unknown form field {other:?}; expected image, tags, metadata, created_at"
                )))
            }
        }
    }
    let fields = parse_fields(&raw_tags, metadata.as_deref(), created_at.as_deref())?;
    Ok(IngestForm { uploads, fields })
}

/// The one `image` field of an image query (similar-image and object search).
pub async fn read_query_image(mut multipart: Multipart) -> Result<Bytes, AppError> {
    let mut image = None;
    while let Some(field) = multipart.next_field().await? {
        match field.name().unwrap_or("") {
            "image" if image.is_none() => image = Some(field.bytes().await?),
            "image" => return Err(AppError::BadRequest("send one image per query".into())),
            other => return Err(AppError::BadRequest(format!("unknown form field {other:?}; expected image"))),
        }
    }
    match image {
        None => Err(AppError::BadRequest("the form has no image field".into())),
        Some(bytes) if bytes.is_empty() => Err(AppError::BadRequest("the image file is empty".into())),
        Some(bytes) => Ok(bytes),
    }
}

/// Tags: comma-separated and/or repeated; metadata: a JSON object; created_at: unix
/// seconds, RFC 3339 or YYYY-MM-DD.
pub fn parse_fields(
    raw_tags: &[String],
    metadata: Option<&str>,
    created_at: Option<&str>,
) -> Result<IngestFields, AppError> {
    let mut tags: Vec<String> = Vec::new();
    for tag in raw_tags.iter().flat_map(|t| t.split(',')).map(str::trim).filter(|t| !t.is_empty()) {
        if tag.chars().count() > MAX_TAG_CHARS {
            return Err(AppError::BadRequest(format!("tag {tag:?} is longer than {MAX_TAG_CHARS} characters")));
        }
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(AppError::BadRequest(format!("at most {MAX_TAGS} tags, got {}", tags.len())));
    }
    let metadata = match metadata.map(str::trim).filter(|m| !m.is_empty()) {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err(AppError::BadRequest("metadata must be a JSON object".into())),
            Err(err) => return Err(AppError::BadRequest(format!("metadata is not valid JSON: {err}"))),
        },
    };
    let created_at = match created_at.map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(text) => Some(match text.parse::<i64>() {
            Ok(seconds) => seconds,
            Err(_) => date_bound("created_at", &DateBound::Text(text.to_owned()), false)?,
        }),
    };
    Ok(IngestFields { tags, metadata, created_at })
}

fn build_record(
    id: String,
    (analysis, faces): (ImageAnalysis, Vec<FaceRecord>),
    fields: &IngestFields,
    class_names: &[String],
) -> ImageRecord {
    let objects = analysis
        .detections
        .into_iter()
        .map(|d| ObjectRecord {
            class_id: d.class_id,
            // decode_ingest only lets through ids inside the class list.
            class_name: class_names[d.class_id as usize].clone(),
            confidence: d.confidence,
            bbox: d.bbox,
            embedding: d.embedding,
        })
        .collect();
    ImageRecord {
        id,
        width: analysis.width,
        height: analysis.height,
        created_at: fields.created_at.unwrap_or_else(|| chrono::Utc::now().timestamp()),
        tags: fields.tags.clone(),
        metadata: serde_json::Value::Object(fields.metadata.clone()),
        embedding: analysis.embedding,
        objects,
        faces,
    }
}

fn already_stored(record: &ImageRecord) -> IngestResult {
    IngestResult {
        id: record.id.clone(),
        status: "already_stored",
        width: record.width,
        height: record.height,
        objects: record.objects.len(),
    }
}

fn check_upload(upload: &Upload) -> Result<(), AppError> {
    if upload.bytes.is_empty() {
        return Err(AppError::BadRequest("the image file is empty".into()));
    }
    Ok(())
}

/// Stores one photo (POST /ingest).
pub async fn ingest_one(state: &AppState, upload: Upload, fields: &IngestFields) -> Result<IngestResult, AppError> {
    let result = ingest_one_unmetered(state, upload, fields).await;
    state.metrics.count_ingest(match &result {
        Ok(r) if r.status == "created" => IngestOutcome::Created,
        Ok(_) => IngestOutcome::AlreadyStored,
        Err(_) => IngestOutcome::Failed,
    });
    result
}

async fn ingest_one_unmetered(
    state: &AppState,
    upload: Upload,
    fields: &IngestFields,
) -> Result<IngestResult, AppError> {
    check_upload(&upload)?;
    let id = content_id(&upload.bytes);
    if let Some(record) = state.store.get(&id).await? {
        return Ok(already_stored(&record));
    }
    let analysis = analyze_for_ingest(state, upload.bytes.clone()).await?;
    let record = build_record(id.clone(), analysis, fields, &state.config.models.class_names);
    state.blobs.put(&id, upload.bytes).await.map_err(|e| AppError::Internal(format!("writing the photo: {e}")))?;
    let outcome = state.store.put(record.clone()).await?;
    Ok(match outcome {
        PutOutcome::Created => IngestResult {
            id,
            status: "created",
            width: record.width,
            height: record.height,
            objects: record.objects.len(),
        },
        PutOutcome::AlreadyStored => already_stored(&record),
    })
}

/// Where one photo of a batch stands before the store commit.
enum Pending {
    Done(BatchItem),
    Analyzed { filename: Option<String>, record: ImageRecord, bytes: Bytes },
}

fn failed(filename: Option<String>, id: Option<String>, error: AppError) -> BatchItem {
    BatchItem {
        filename,
        id,
        status: "failed",
        objects: None,
        http_status: error.status().as_u16(),
        error: Some(error.to_string()),
    }
}

fn stored(filename: Option<String>, result: IngestResult, http_status: StatusCode) -> BatchItem {
    BatchItem {
        filename,
        id: Some(result.id),
        status: result.status,
        objects: Some(result.objects),
        error: None,
        http_status: http_status.as_u16(),
    }
}

/// Stores several photos (POST /ingest/batch): analysed concurrently, committed with
/// one `put_batch`; a photo that fails is reported in its entry and does not fail the rest.
pub async fn ingest_batch(state: &AppState, uploads: Vec<Upload>, fields: &IngestFields) -> BatchResponse {
    let mut seen = HashSet::new();
    let analyses = stream::iter(uploads.into_iter().map(|upload| {
        let id = content_id(&upload.bytes);
        let duplicate = !seen.insert(id.clone());
        analyze_for_batch(state, upload, id, duplicate, fields)
    }))
    .buffered(state.config.server.batch_concurrency)
    .collect::<Vec<Pending>>()
    .await;

    let mut items: Vec<Option<BatchItem>> = Vec::with_capacity(analyses.len());
    let mut to_store = Vec::new();
    for (position, pending) in analyses.into_iter().enumerate() {
        match pending {
            Pending::Done(item) => items.push(Some(item)),
            Pending::Analyzed { filename, record, bytes } => {
                match state.blobs.put(&record.id, bytes).await {
                    Ok(()) => to_store.push((position, filename, record)),
                    Err(err) => {
                        items.push(Some(failed(
                            filename,
                            Some(record.id),
                            AppError::Internal(format!("writing the photo: {err}")),
                        )));
                        continue;
                    }
                }
                items.push(None);
            }
        }
    }
    let records: Vec<ImageRecord> = to_store.iter().map(|(_, _, r)| r.clone()).collect();
    match state.store.put_batch(records).await {
        Ok(outcomes) => {
            for ((position, filename, record), outcome) in to_store.into_iter().zip(outcomes) {
                items[position] = Some(match outcome {
                    Ok(PutOutcome::Created) => stored(
                        filename,
                        IngestResult { status: "created", ..already_stored(&record) },
                        StatusCode::CREATED,
                    ),
                    Ok(PutOutcome::AlreadyStored) => stored(filename, already_stored(&record), StatusCode::OK),
                    Err(err) => failed(filename, Some(record.id), err.into()),
                });
            }
        }
        Err(err) => {
            // The whole commit failed (e.g. OpenSearch unreachable): every photo of it is 503.
            let message = match err {
                visual_store::StoreError::Unavailable(message) => message,
                other => other.to_string(),
            };
            for (position, filename, record) in to_store {
                let error = AppError::from(visual_store::StoreError::Unavailable(message.clone()));
                items[position] = Some(failed(filename, Some(record.id), error));
            }
        }
    }
    let results: Vec<BatchItem> = items.into_iter().map(|i| i.expect("every position answered")).collect();
    for item in &results {
        state.metrics.count_ingest(match item.status {
            "created" => IngestOutcome::Created,
            "already_stored" => IngestOutcome::AlreadyStored,
            _ => IngestOutcome::Failed,
        });
    }
    BatchResponse {
        created: results.iter().filter(|i| i.status == "created").count(),
        already_stored: results.iter().filter(|i| i.status == "already_stored").count(),
        failed: results.iter().filter(|i| i.status == "failed").count(),
        results,
    }
}

async fn analyze_for_batch(
    state: &AppState,
    upload: Upload,
    id: String,
    duplicate: bool,
    fields: &IngestFields,
) -> Pending {
    let filename = upload.filename.clone();
    if let Err(err) = check_upload(&upload) {
        return Pending::Done(failed(filename, None, err));
    }
    let existing = match state.store.get(&id).await {
        Ok(existing) => existing,
        Err(err) => return Pending::Done(failed(filename, Some(id), err.into())),
    };
    if let Some(record) = existing {
        return Pending::Done(stored(filename, already_stored(&record), StatusCode::OK));
    }
    if duplicate {
        // The same bytes earlier in this batch: that entry stores them.
        let result = IngestResult { id, status: "already_stored", width: 0, height: 0, objects: 0 };
        return Pending::Done(BatchItem { objects: None, ..stored(filename, result, StatusCode::OK) });
    }
    match analyze_for_ingest(state, upload.bytes.clone()).await {
        Ok(analysis) => Pending::Analyzed {
            filename,
            record: build_record(id, analysis, fields, &state.config.models.class_names),
            bytes: upload.bytes,
        },
        Err(err) => Pending::Done(failed(filename, Some(id), err.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_on_commas_trim_and_dedupe() {
        let fields = parse_fields(&["beach, sunset,,".into(), "beach".into(), " dog ".into()], None, None).unwrap();
        assert_eq!(fields.tags, vec!["beach", "sunset", "dog"]);
    }

    #[test]
    fn metadata_must_be_a_json_object() {
        let fields = parse_fields(&[], Some(r#"{"camera": "x100"}"#), None).unwrap();
        assert_eq!(fields.metadata["camera"], "x100");
        let err = parse_fields(&[], Some("[1, 2]"), None).unwrap_err().to_string();
        assert!(err.contains("JSON object"), "{err}");
        let err = parse_fields(&[], Some("{not json"), None).unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn created_at_accepts_seconds_and_dates() {
        assert_eq!(parse_fields(&[], None, Some("1700000000")).unwrap().created_at, Some(1_700_000_000));
        assert_eq!(parse_fields(&[], None, Some("2024-01-01")).unwrap().created_at, Some(1_704_067_200));
        assert!(parse_fields(&[], None, Some("last week")).is_err());
    }

    #[test]
    fn overlong_tags_are_rejected() {
        assert!(parse_fields(&["x".repeat(101)], None, None).is_err());
    }
}
