//! Request bodies that are not one JSON document: the multipart forms of ingest, of the
//! image and region queries and of /faces/embeddings, and the base64 JSON form of the latter. Each
//! reader checks field names and counts and hands the service layer plain values.

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use base64::Engine;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::api::{FaceEmbeddingsRequest, FaceOptions};
use crate::config::LimitsConfig;
use crate::http::error::{ApiJson, AppError};
use crate::service::faces::FaceUpload;
use crate::service::ingest::{parse_fields, IngestFields, Upload};
use crate::service::ServiceError;

pub struct IngestUploads {
    pub uploads: Vec<Upload>,
    pub fields: IngestFields,
}

fn check_image_size(bytes: &Bytes, limits: &LimitsConfig) -> Result<(), AppError> {
    if bytes.len() > limits.max_image_bytes {
        return Err(AppError::Rejected {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "an image of {} bytes; the limit is {} (limits.max_image_bytes)",
                bytes.len(),
                limits.max_image_bytes
            ),
        });
    }
    Ok(())
}

/// The ingest form: fields may come in any order, and nothing is stored before every
/// field is known to be valid; at most `limits.max_batch_images` images.
pub async fn read_ingest_form(mut multipart: Multipart, limits: &LimitsConfig) -> Result<IngestUploads, AppError> {
    let mut uploads = Vec::new();
    let mut raw_tags = Vec::new();
    let mut metadata = None;
    let mut created_at = None;
    while let Some(field) = multipart.next_field().await? {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "image" | "images" => {
                if uploads.len() == limits.max_batch_images {
                    return Err(AppError::bad_request(format!(
                        "more than {} images in one request (limits.max_batch_images)",
                        limits.max_batch_images
                    )));
                }
                let filename = field.file_name().map(str::to_owned);
                let bytes = field.bytes().await?;
                check_image_size(&bytes, limits)?;
                uploads.push(Upload { filename, bytes });
            }
            "tags" => raw_tags.push(field.text().await?),
            "metadata" => metadata = Some(field.text().await?),
            "created_at" => created_at = Some(field.text().await?),
            other => {
                return Err(AppError::bad_request(format!(
                    "unknown form field {other:?}; expected image, tags, metadata, created_at"
                )))
            }
        }
    }
    let fields = parse_fields(&raw_tags, metadata.as_deref(), created_at.as_deref(), limits)?;
    Ok(IngestUploads { uploads, fields })
}

/// The one `image` field of an image query (similar-image, object and face search).
pub async fn read_query_image(mut multipart: Multipart, limits: &LimitsConfig) -> Result<Bytes, AppError> {
    let mut image = None;
    while let Some(field) = multipart.next_field().await? {
        match field.name().unwrap_or("") {
            "image" if image.is_none() => {
                let bytes = field.bytes().await?;
                check_image_size(&bytes, limits)?;
                image = Some(bytes);
            }
            "image" => return Err(AppError::bad_request("send one image per query")),
            other => return Err(AppError::bad_request(format!("unknown form field {other:?}; expected image"))),
        }
    }
    match image {
        None => Err(AppError::bad_request("the form has no image field")),
        Some(bytes) if bytes.is_empty() => Err(AppError::bad_request("the image file is empty")),
        Some(bytes) => Ok(bytes),
    }
}

/// The `image` and `box` fields of a region query, one each; the box text is parsed by the
/// service (`service::region::parse_box`).
pub async fn read_region_form(mut multipart: Multipart, limits: &LimitsConfig) -> Result<(Bytes, String), AppError> {
    let (mut image, mut bbox) = (None, None);
    while let Some(field) = multipart.next_field().await? {
        match field.name().unwrap_or("") {
            "image" if image.is_none() => {
                let bytes = field.bytes().await?;
                check_image_size(&bytes, limits)?;
                image = Some(bytes);
            }
            "box" if bbox.is_none() => bbox = Some(field.text().await?),
            name @ ("image" | "box") => return Err(AppError::bad_request(format!("send one {name} per query"))),
            other => return Err(AppError::bad_request(format!("unknown form field {other:?}; expected image, box"))),
        }
    }
    let image = match image {
        None => return Err(AppError::bad_request("the form has no image field")),
        Some(bytes) if bytes.is_empty() => return Err(AppError::bad_request("the image file is empty")),
        Some(bytes) => bytes,
    };
    let bbox = bbox.ok_or_else(|| {
        AppError::bad_request("the form has no box field (x1,y1,x2,y2 in the photo's pixels after EXIF orientation)")
    })?;
    Ok((image, bbox))
}

pub fn is_multipart(request: &Request) -> bool {
    request.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"multipart/form-data"))
}

/// A search body that is either a JSON query `Q`, or a multipart photo whose query comes
/// from the query string (`from_params`).
pub async fn json_or_photo<Q: DeserializeOwned>(
    request: Request,
    limits: &LimitsConfig,
    from_params: impl FnOnce() -> Q,
) -> Result<(Option<Bytes>, Q), AppError> {
    if is_multipart(&request) {
        let multipart = Multipart::from_request(request, &()).await?;
        Ok((Some(read_query_image(multipart, limits).await?), from_params()))
    } else {
        let ApiJson(query) = ApiJson::<Q>::from_request(request, &()).await?;
        Ok((None, query))
    }
}

fn too_many(count: usize, max: usize) -> AppError {
    AppError::bad_request(format!("{count} images in one request; the limit is {max} (faces.max_images_per_request)"))
}

fn parse_flag(name: &str, text: &str) -> Result<bool, AppError> {
    match text.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        other => Err(AppError::bad_request(format!("{name} must be true or false, got {other:?}"))),
    }
}

/// The multipart form of /faces/embeddings: `image` (or `images`) files, repeated, and
/// the option fields.
pub async fn read_face_form(
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
                return Err(AppError::bad_request(format!(
                    "unknown form field {other:?}; expected image, aligned_faces, raw_embeddings, raw_boxes"
                )))
            }
        }
    }
    Ok((uploads, options))
}

/// The JSON form of /faces/embeddings: base64 images; one that is not valid base64
/// becomes its own error entry.
pub fn read_face_json(
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
                .map_err(|err| ServiceError::BadRequest(format!("data is not valid base64: {err}"))),
        })
        .collect();
    Ok((uploads, request.options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_images_are_base64_and_limited() {
        let request: FaceEmbeddingsRequest = serde_json::from_value(serde_json::json!({
            "images": [{"name": "a.jpg", "data": "aGVsbG8="}, {"data": "not base64!"}],
            "options": {"raw_boxes": true}
        }))
        .unwrap();
        let (uploads, options) = read_face_json(request.clone(), 2).unwrap();
        assert_eq!(uploads[0].bytes.as_ref().unwrap().as_ref(), b"hello");
        assert_eq!(uploads[0].name.as_deref(), Some("a.jpg"));
        assert!(uploads[1].bytes.is_err());
        assert!(options.raw_boxes);
        let err = read_face_json(request, 1).err().expect("over the limit").to_string();
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
}
