//! Ingest: a photo's fields (tags, metadata, created_at) checked, and storing photos: id =
//! SHA-256 of the bytes; a photo already stored is answered without a Triton call;
//! otherwise the ensemble's analysis (and, with face indexing on, the photo's faces:
//! `faces::analyze_for_ingest`) becomes an `ImageRecord`, the file is written (durably)
//! before the record, so every acknowledged id has its photo.

use std::collections::HashSet;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::StatusCode;
use visual_store::{FaceRecord, ImageRecord, ObjectRecord, PutOutcome, Store};

use crate::api::{BatchItem, BatchResponse, DateBound, IngestResult};
use crate::blobs::{content_id, BlobStore};
use crate::config::LimitsConfig;
use crate::inference::{ImageAnalysis, Inference};
use crate::metrics::{IngestOutcome, Metrics};
use crate::service::dates::unix_seconds;
use crate::service::faces::{analyze_for_ingest, FaceIndexing};
use crate::service::id_locks::IdLocks;
use crate::service::json_depth;
use crate::service::tags::{self, TagLimits};
use crate::service::ServiceError;

/// What storing photos needs.
pub struct IngestDeps<'a> {
    pub store: &'a dyn Store,
    pub inference: &'a dyn Inference,
    pub blobs: &'a BlobStore,
    /// Serialise each photo's commit with deletes of it.
    pub locks: &'a IdLocks,
    pub metrics: &'a Metrics,
    /// The detector's class names, by class id.
    pub class_names: &'a [String],
    /// Photos of one batch analysed at once (`server.batch_concurrency`).
    pub batch_concurrency: usize,
    pub faces: FaceIndexing,
}

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

/// Tags: comma-separated and/or repeated, trimmed, duplicates removed (first kept), in
/// one pass that stops at the first tag over `limits.max_tags`; metadata: a JSON object
/// within `limits.max_metadata_bytes` and `limits.max_metadata_depth`; created_at: unix
/// seconds, RFC 3339 or YYYY-MM-DD.
pub fn parse_fields(
    raw_tags: &[String],
    metadata: Option<&str>,
    created_at: Option<&str>,
    limits: &LimitsConfig,
) -> Result<IngestFields, ServiceError> {
    let tag_limits =
        TagLimits { max_tags: limits.max_tags, key: "limits.max_tags", max_chars: Some(limits.max_tag_chars) };
    let tags = tags::distinct(raw_tags.iter().flat_map(|t| t.split(',')), &tag_limits)?;
    let metadata = match metadata.map(str::trim).filter(|m| !m.is_empty()) {
        None => serde_json::Map::new(),
        Some(text) if text.len() > limits.max_metadata_bytes => {
            return Err(ServiceError::BadRequest(format!(
                "metadata is {} bytes; the limit is {} (limits.max_metadata_bytes)",
                text.len(),
                limits.max_metadata_bytes
            )))
        }
        Some(text) if json_depth::exceeds(text.as_bytes(), limits.max_metadata_depth) => {
            return Err(ServiceError::BadRequest(format!(
                "metadata nests deeper than {} levels (limits.max_metadata_depth)",
                limits.max_metadata_depth
            )))
        }
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err(ServiceError::BadRequest("metadata must be a JSON object".into())),
            Err(err) => return Err(ServiceError::BadRequest(format!("metadata is not valid JSON: {err}"))),
        },
    };
    let created_at = match created_at.map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(text) => Some(match text.parse::<i64>() {
            Ok(seconds) => seconds,
            Err(_) => unix_seconds("created_at", &DateBound::Text(text.to_owned()), false)?,
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

fn check_upload(upload: &Upload) -> Result<(), ServiceError> {
    if upload.bytes.is_empty() {
        return Err(ServiceError::BadRequest("the image file is empty".into()));
    }
    Ok(())
}

/// Stores one photo (POST /ingest).
pub async fn ingest_one(
    deps: &IngestDeps<'_>,
    upload: Upload,
    fields: &IngestFields,
) -> Result<IngestResult, ServiceError> {
    let result = ingest_one_unmetered(deps, upload, fields).await;
    deps.metrics.count_ingest(match &result {
        Ok(r) if r.status == "created" => IngestOutcome::Created,
        Ok(_) => IngestOutcome::AlreadyStored,
        Err(_) => IngestOutcome::Failed,
    });
    result
}

async fn ingest_one_unmetered(
    deps: &IngestDeps<'_>,
    upload: Upload,
    fields: &IngestFields,
) -> Result<IngestResult, ServiceError> {
    check_upload(&upload)?;
    let id = content_id(&upload.bytes);
    if let Some(record) = deps.store.get(&id).await? {
        return Ok(already_stored(&record));
    }
    let analysis = analyze_for_ingest(deps.inference, deps.faces, upload.bytes.clone()).await?;
    let record = build_record(id.clone(), analysis, fields, deps.class_names);
    let _held = deps.locks.lock(&id).await;
    deps.blobs.put(&id, upload.bytes).await.map_err(|e| ServiceError::Internal(format!("writing the photo: {e}")))?;
    let outcome = deps.store.put(record.clone()).await?;
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

fn failed(filename: Option<String>, id: Option<String>, error: ServiceError) -> BatchItem {
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
pub async fn ingest_batch(deps: &IngestDeps<'_>, uploads: Vec<Upload>, fields: &IngestFields) -> BatchResponse {
    let mut seen = HashSet::new();
    let analyses = stream::iter(uploads.into_iter().map(|upload| {
        let id = content_id(&upload.bytes);
        let duplicate = !seen.insert(id.clone());
        analyze_for_batch(deps, upload, id, duplicate, fields)
    }))
    .buffered(deps.batch_concurrency)
    .collect::<Vec<Pending>>()
    .await;

    let analyzed_ids = analyses.iter().filter_map(|pending| match pending {
        Pending::Analyzed { record, .. } => Some(record.id.as_str()),
        Pending::Done(_) => None,
    });
    let _held = deps.locks.lock_all(analyzed_ids).await;
    let mut items: Vec<Option<BatchItem>> = Vec::with_capacity(analyses.len());
    let mut to_store = Vec::new();
    for (position, pending) in analyses.into_iter().enumerate() {
        match pending {
            Pending::Done(item) => items.push(Some(item)),
            Pending::Analyzed { filename, record, bytes } => {
                match deps.blobs.put(&record.id, bytes).await {
                    Ok(()) => to_store.push((position, filename, record)),
                    Err(err) => {
                        items.push(Some(failed(
                            filename,
                            Some(record.id),
                            ServiceError::Internal(format!("writing the photo: {err}")),
                        )));
                        continue;
                    }
                }
                items.push(None);
            }
        }
    }
    let records: Vec<ImageRecord> = to_store.iter().map(|(_, _, r)| r.clone()).collect();
    match deps.store.put_batch(records).await {
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
                let error = ServiceError::from(visual_store::StoreError::Unavailable(message.clone()));
                items[position] = Some(failed(filename, Some(record.id), error));
            }
        }
    }
    let results: Vec<BatchItem> = items.into_iter().map(|i| i.expect("every position answered")).collect();
    for item in &results {
        deps.metrics.count_ingest(match item.status {
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
    deps: &IngestDeps<'_>,
    upload: Upload,
    id: String,
    duplicate: bool,
    fields: &IngestFields,
) -> Pending {
    let filename = upload.filename.clone();
    if let Err(err) = check_upload(&upload) {
        return Pending::Done(failed(filename, None, err));
    }
    let existing = match deps.store.get(&id).await {
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
    match analyze_for_ingest(deps.inference, deps.faces, upload.bytes.clone()).await {
        Ok(analysis) => Pending::Analyzed {
            filename,
            record: build_record(id, analysis, fields, deps.class_names),
            bytes: upload.bytes,
        },
        Err(err) => Pending::Done(failed(filename, Some(id), err.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig::default()
    }

    #[test]
    fn tags_split_on_commas_trim_and_dedupe() {
        let raw = ["beach, sunset,,".into(), "beach".into(), " dog ".into()];
        let fields = parse_fields(&raw, None, None, &limits()).unwrap();
        assert_eq!(fields.tags, vec!["beach", "sunset", "dog"]);
    }

    #[test]
    fn metadata_must_be_a_json_object() {
        let fields = parse_fields(&[], Some(r#"{"camera": "x100"}"#), None, &limits()).unwrap();
        assert_eq!(fields.metadata["camera"], "x100");
        let err = parse_fields(&[], Some("[1, 2]"), None, &limits()).unwrap_err().to_string();
        assert!(err.contains("JSON object"), "{err}");
        let err = parse_fields(&[], Some("{not json"), None, &limits()).unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn metadata_size_and_depth_are_bounded() {
        let big = format!(r#"{{"x": "{}"}}"#, "a".repeat(limits().max_metadata_bytes));
        let err = parse_fields(&[], Some(&big), None, &limits()).unwrap_err().to_string();
        assert!(err.contains("limits.max_metadata_bytes"), "{err}");
        let deep = format!(r#"{{"a": {}1{}}}"#, "[".repeat(8), "]".repeat(8));
        let err = parse_fields(&[], Some(&deep), None, &limits()).unwrap_err().to_string();
        assert!(err.contains("limits.max_metadata_depth"), "{err}");
        let fits = format!(r#"{{"a": {}1{}}}"#, "[".repeat(7), "]".repeat(7));
        assert!(parse_fields(&[], Some(&fits), None, &limits()).is_ok());
    }

    #[test]
    fn created_at_accepts_seconds_and_dates() {
        let created = |text| parse_fields(&[], None, Some(text), &limits()).map(|f| f.created_at);
        assert_eq!(created("1700000000").unwrap(), Some(1_700_000_000));
        assert_eq!(created("2024-01-01").unwrap(), Some(1_704_067_200));
        assert!(created("last week").is_err());
    }

    #[test]
    fn overlong_and_too_many_tags_are_rejected() {
        let err = parse_fields(&["x".repeat(101)], None, None, &limits()).unwrap_err().to_string();
        assert!(err.contains("limits.max_tag_chars"), "{err}");
        let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        let err = parse_fields(&many, None, None, &limits()).unwrap_err().to_string();
        assert!(err.contains("limits.max_tags"), "{err}");
        // Repeats of the allowed tags are not counted against the limit.
        let repeats: Vec<String> = (0..10_000).map(|i| format!("t{}", i % 64)).collect();
        assert_eq!(parse_fields(&repeats, None, None, &limits()).unwrap().tags.len(), 64);
    }
}
