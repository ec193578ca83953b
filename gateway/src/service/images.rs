//! Stored photos by id: the record without vectors, the photo file, deletion (record first,
//! then the file, so a crash never leaves a record without its photo).

use visual_store::Store;

use crate::api::{DeleteResult, ImageView};
use crate::blobs::{is_valid_id, sniff_content_type, BlobStore};
use crate::service::id_locks::IdLocks;
use crate::service::ServiceError;

/// A stored photo's bytes and their MIME type.
pub struct PhotoFile {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

fn checked_id(id: &str) -> Result<&str, ServiceError> {
    if is_valid_id(id) {
        Ok(id)
    } else {
        Err(ServiceError::BadRequest(format!(
            "{id:?} is not an image id (64 lowercase hex digits, the SHA-256 of the photo)"
        )))
    }
}

pub async fn get(store: &dyn Store, id: &str) -> Result<ImageView, ServiceError> {
    let id = checked_id(id)?;
    match store.get(id).await? {
        Some(record) => Ok(ImageView::from(&record)),
        None => Err(ServiceError::NotFound(format!("no image {id}"))),
    }
}

/// The stored vector a "more like this" search starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredPart {
    Photo,
    /// The object at this index of the record (`GET /images/{id}`'s `objects`).
    Object(usize),
    /// The face at this index of the record's `faces`.
    Face(usize),
}

/// The stored embedding of a photo, one of its objects or one of its faces: no Triton call.
/// 404 names what is missing (the image, or the index past its objects or faces).
pub async fn stored_vector(store: &dyn Store, id: &str, part: StoredPart) -> Result<Vec<f32>, ServiceError> {
    let id = checked_id(id)?;
    let record = store.get(id).await?.ok_or_else(|| ServiceError::NotFound(format!("no image {id}")))?;
    let missing = |kind: &str, count: usize, index: usize| {
        ServiceError::NotFound(format!("image {id} has {count} {kind}(s): there is no {kind} {index}"))
    };
    match part {
        StoredPart::Photo => Ok(record.embedding),
        StoredPart::Object(index) => {
            let count = record.objects.len();
            record.objects.into_iter().nth(index).map(|o| o.embedding).ok_or_else(|| missing("object", count, index))
        }
        StoredPart::Face(index) => {
            let count = record.faces.len();
            record.faces.into_iter().nth(index).map(|f| f.embedding).ok_or_else(|| missing("face", count, index))
        }
    }
}

pub async fn file(blobs: &BlobStore, id: &str) -> Result<PhotoFile, ServiceError> {
    let id = checked_id(id)?;
    let bytes = blobs
        .get(id)
        .await
        .map_err(|e| ServiceError::Internal(format!("reading the photo: {e}")))?
        .ok_or_else(|| ServiceError::NotFound(format!("no photo {id}")))?;
    Ok(PhotoFile { content_type: sniff_content_type(&bytes), bytes })
}

/// Deletes under the id's lock, so no ingest commit of the same photo interleaves.
pub async fn delete(
    store: &dyn Store,
    blobs: &BlobStore,
    locks: &IdLocks,
    id: &str,
) -> Result<DeleteResult, ServiceError> {
    let id = checked_id(id)?;
    let _held = locks.lock(id).await;
    if !store.delete(id).await? {
        return Err(ServiceError::NotFound(format!("no image {id}")));
    }
    blobs.delete(id).await.map_err(|e| ServiceError::Internal(format!("deleting the photo: {e}")))?;
    Ok(DeleteResult { id: id.to_owned(), deleted: true })
}
