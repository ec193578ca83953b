//! The on-disk value of one image in redb: its slot (the number its vectors are keyed by),
//! the record without vectors as JSON (metadata is free-form JSON, so a schema-less binary
//! format would not round-trip it), then every vector as little-endian f32 in record order
//! (image, objects, faces). Raw vectors keep reopening a 100k-image store cheap: no float
//! parsing.

use crate::{ImageRecord, StoreError};

/// Bytes before the JSON header: slot (u64) and header length (u32).
const PREFIX_LEN: usize = 12;

pub fn encode(slot: u64, record: &ImageRecord) -> Vec<u8> {
    let mut header = record.clone();
    header.embedding = Vec::new();
    header.objects.iter_mut().for_each(|o| o.embedding = Vec::new());
    header.faces.iter_mut().for_each(|f| f.embedding = Vec::new());
    let json = serde_json::to_vec(&header).expect("an ImageRecord always serialises");
    let vectors = std::iter::once(&record.embedding)
        .chain(record.objects.iter().map(|o| &o.embedding))
        .chain(record.faces.iter().map(|f| &f.embedding));
    let vector_bytes = 4 * record.embedding.len() * (1 + record.objects.len() + record.faces.len());
    let mut bytes = Vec::with_capacity(PREFIX_LEN + json.len() + vector_bytes);
    bytes.extend_from_slice(&slot.to_le_bytes());
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&json);
    for vector in vectors {
        for value in vector {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    bytes
}

pub fn decode_slot(bytes: &[u8]) -> Result<u64, StoreError> {
    let prefix = bytes.get(..8).ok_or_else(|| corrupt("value shorter than its slot"))?;
    Ok(u64::from_le_bytes(prefix.try_into().expect("8 bytes")))
}

pub fn decode(bytes: &[u8]) -> Result<(u64, ImageRecord), StoreError> {
    let (slot, mut record, floats) = decode_header(bytes)?;
    if floats.is_empty() {
        return Err(corrupt("no vector bytes"));
    }
    let vector_count = 1 + record.objects.len() + record.faces.len();
    if !floats.len().is_multiple_of(4 * vector_count) {
        return Err(corrupt("vector bytes do not divide into the record's vectors"));
    }
    // Not zero: `floats` is non-empty and a multiple of 4 * vector_count.
    fill_vectors(&mut record, floats, floats.len() / (4 * vector_count));
    Ok((slot, record))
}

/// The slot, the record without its vectors, and the vector bytes, unparsed.
pub fn decode_header(bytes: &[u8]) -> Result<(u64, ImageRecord, &[u8]), StoreError> {
    let slot = decode_slot(bytes)?;
    let json_len = u32::from_le_bytes(
        bytes.get(8..12).ok_or_else(|| corrupt("missing header length"))?.try_into().expect("4 bytes"),
    ) as usize;
    let json = bytes.get(PREFIX_LEN..PREFIX_LEN + json_len).ok_or_else(|| corrupt("header cut short"))?;
    let record: ImageRecord = serde_json::from_slice(json).map_err(|e| corrupt(&format!("header JSON: {e}")))?;
    Ok((slot, record, &bytes[PREFIX_LEN + json_len..]))
}

/// Puts the vectors of `floats` (as [`decode_header`] returns them, already known to hold
/// every vector of the record at `dimension`) into `record`.
pub fn fill_vectors(record: &mut ImageRecord, floats: &[u8], dimension: usize) {
    let mut chunks = floats.chunks_exact(4 * dimension).map(|chunk| {
        chunk.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect::<Vec<f32>>()
    });
    record.embedding = chunks.next().expect("at least the image vector");
    record.objects.iter_mut().for_each(|o| o.embedding = chunks.next().expect("counted"));
    record.faces.iter_mut().for_each(|f| f.embedding = chunks.next().expect("counted"));
}

/// Vector number `position` (0 the image, then objects, then faces) of a stored value,
/// read without parsing the header; `None` when the value holds another slot or has no
/// such vector.
pub fn vector_at(bytes: &[u8], slot: u64, position: usize, dimension: usize) -> Option<Vec<f32>> {
    if decode_slot(bytes).ok()? != slot {
        return None;
    }
    let json_len = u32::from_le_bytes(bytes.get(8..PREFIX_LEN)?.try_into().ok()?) as usize;
    let width = 4 * dimension;
    let start = PREFIX_LEN.checked_add(json_len)?.checked_add(position.checked_mul(width)?)?;
    let vector = bytes.get(start..start.checked_add(width)?)?;
    Some(vector.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Io(format!("corrupt stored record: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FaceRecord, ObjectRecord};

    #[test]
    fn round_trips_every_field() {
        let record = ImageRecord {
            id: "abc".into(),
            width: 640,
            height: 480,
            created_at: -5,
            tags: vec!["beach".into()],
            metadata: serde_json::json!({"camera": {"iso": 100}}),
            embedding: vec![0.5, -0.25, 1.0],
            objects: vec![ObjectRecord {
                class_id: 0,
                class_name: "person".into(),
                confidence: 0.9,
                bbox: [1.0, 2.0, 3.0, 4.0],
                embedding: vec![1.0, 2.0, 3.0],
            }],
            faces: vec![FaceRecord {
                confidence: 0.8,
                bbox: [0.0; 4],
                landmarks: [[1.0, 2.0]; 5],
                embedding: vec![4.0, 5.0, 6.0],
            }],
        };
        let bytes = encode(42, &record);
        assert_eq!(vector_at(&bytes, 42, 0, 3), Some(record.embedding.clone()));
        assert_eq!(vector_at(&bytes, 42, 1, 3), Some(record.objects[0].embedding.clone()));
        assert_eq!(vector_at(&bytes, 42, 2, 3), Some(record.faces[0].embedding.clone()));
        assert_eq!(vector_at(&bytes, 42, 3, 3), None);
        assert_eq!(vector_at(&bytes, 41, 0, 3), None);
        assert_eq!(decode(&bytes).unwrap(), (42, record));
    }

    /// A value cut anywhere up to the end of its header is an error, never a panic; cut at
    /// the header's end it has no vector bytes, which would divide into vectors of length 0.
    /// (Cut inside the vectors it may decode with a shorter dimension: the store's dimension
    /// check at open catches that.)
    #[test]
    fn damaged_values_are_errors() {
        let record = ImageRecord {
            id: "abc".into(),
            width: 1,
            height: 1,
            created_at: 0,
            tags: vec![],
            metadata: serde_json::json!({}),
            embedding: vec![1.0, 2.0],
            objects: vec![],
            faces: vec![],
        };
        let bytes = encode(7, &record);
        let header_end = bytes.len() - 8;
        for cut in 0..=header_end {
            let message = decode(&bytes[..cut]).unwrap_err().to_string();
            assert!(message.starts_with("storage I/O: corrupt stored record"), "{message}");
        }
        assert!(decode(&bytes[..header_end]).unwrap_err().to_string().contains("no vector bytes"));
    }
}
