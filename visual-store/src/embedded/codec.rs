//! The on-disk value of one image in redb (layout 2): its slot (the number its graph keys
//! derive from), the index of its first vector in the vector file, then the record without
//! vectors as JSON (metadata is free-form JSON, so a schema-less binary format would not
//! round-trip it). The vectors (image, objects, faces) follow each other in the vector file.
//!
//! Layout 1 kept the vectors in the value after the JSON; [`decode_layout_1`] reads it for
//! the one-time move of a store written by an older build.

use crate::{ImageRecord, StoreError};

/// Bytes before the JSON header: slot (u64), first vector (u64), header length (u32).
const PREFIX_LEN: usize = 20;
/// Layout 1: slot (u64), header length (u32).
const PREFIX_LEN_1: usize = 12;

/// The value of `record` (its vectors are not part of it).
pub fn encode(slot: u64, first_vector: u64, record: &ImageRecord) -> Vec<u8> {
    let mut header = record.clone();
    header.embedding = Vec::new();
    header.objects.iter_mut().for_each(|o| o.embedding = Vec::new());
    header.faces.iter_mut().for_each(|f| f.embedding = Vec::new());
    let json = serde_json::to_vec(&header).expect("an ImageRecord always serialises");
    let mut bytes = Vec::with_capacity(PREFIX_LEN + json.len());
    bytes.extend_from_slice(&slot.to_le_bytes());
    bytes.extend_from_slice(&first_vector.to_le_bytes());
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes
}

pub fn decode_slot(bytes: &[u8]) -> Result<u64, StoreError> {
    let prefix = bytes.get(..8).ok_or_else(|| corrupt("value shorter than its slot"))?;
    Ok(u64::from_le_bytes(prefix.try_into().expect("8 bytes")))
}

/// What a value holds: the slot, the index of the first vector, the record without vectors.
pub struct Stored {
    pub slot: u64,
    pub first_vector: u64,
    pub record: ImageRecord,
}

impl Stored {
    pub fn vector_count(&self) -> usize {
        vector_count(&self.record)
    }
}

/// Vectors of a record in the vector file: the image's, then objects', then faces'.
pub fn vector_count(record: &ImageRecord) -> usize {
    1 + record.objects.len() + record.faces.len()
}

pub fn decode(bytes: &[u8]) -> Result<Stored, StoreError> {
    let slot = decode_slot(bytes)?;
    let first_vector = u64::from_le_bytes(
        bytes.get(8..16).ok_or_else(|| corrupt("missing first vector"))?.try_into().expect("8 bytes"),
    );
    let json_len = u32::from_le_bytes(
        bytes.get(16..PREFIX_LEN).ok_or_else(|| corrupt("missing header length"))?.try_into().expect("4 bytes"),
    ) as usize;
    let json = bytes.get(PREFIX_LEN..).filter(|rest| rest.len() == json_len).ok_or_else(|| {
        corrupt(&format!("header of {} bytes where {json_len} were written", bytes.len().saturating_sub(PREFIX_LEN)))
    })?;
    let record = serde_json::from_slice(json).map_err(|e| corrupt(&format!("header JSON: {e}")))?;
    Ok(Stored { slot, first_vector, record })
}

/// Puts `vectors` (the image's, then objects', then faces', as many as the record has) into
/// `record`.
pub fn fill_vectors(record: &mut ImageRecord, vectors: Vec<Vec<f32>>) {
    let mut vectors = vectors.into_iter();
    record.embedding = vectors.next().expect("at least the image vector");
    record.objects.iter_mut().for_each(|o| o.embedding = vectors.next().expect("counted"));
    record.faces.iter_mut().for_each(|f| f.embedding = vectors.next().expect("counted"));
}

/// A layout-1 value: slot and the whole record, vectors included.
pub fn decode_layout_1(bytes: &[u8]) -> Result<(u64, ImageRecord), StoreError> {
    let slot = decode_slot(bytes)?;
    let json_len = u32::from_le_bytes(
        bytes.get(8..PREFIX_LEN_1).ok_or_else(|| corrupt("missing header length"))?.try_into().expect("4 bytes"),
    ) as usize;
    let json = bytes.get(PREFIX_LEN_1..PREFIX_LEN_1 + json_len).ok_or_else(|| corrupt("header cut short"))?;
    let mut record: ImageRecord = serde_json::from_slice(json).map_err(|e| corrupt(&format!("header JSON: {e}")))?;
    let floats = &bytes[PREFIX_LEN_1 + json_len..];
    let count = vector_count(&record);
    if floats.is_empty() || !floats.len().is_multiple_of(4 * count) {
        return Err(corrupt("vector bytes do not divide into the record's vectors"));
    }
    let dimension = floats.len() / (4 * count);
    let vectors = floats
        .chunks_exact(4 * dimension)
        .map(|chunk| chunk.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())
        .collect();
    fill_vectors(&mut record, vectors);
    Ok((slot, record))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Io(format!("corrupt stored record: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FaceRecord, ObjectRecord};

    fn record() -> ImageRecord {
        ImageRecord {
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
        }
    }

    #[test]
    fn round_trips_every_field() {
        let record = record();
        let stored = decode(&encode(42, 1234, &record)).unwrap();
        assert_eq!((stored.slot, stored.first_vector, stored.vector_count()), (42, 1234, 3));
        let mut decoded = stored.record;
        assert!(decoded.embedding.is_empty(), "vectors live in the vector file");
        fill_vectors(&mut decoded, vec![record.embedding.clone(), vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
        assert_eq!(decoded, record);
    }

    /// A value cut anywhere, or with bytes after its header, is an error, never a panic.
    #[test]
    fn damaged_values_are_errors() {
        let bytes = encode(7, 0, &record());
        for cut in 0..bytes.len() {
            let message = decode(&bytes[..cut]).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(message.starts_with("storage I/O: corrupt stored record"), "cut at {cut}: {message}");
        }
        let mut longer = bytes.clone();
        longer.push(b' ');
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn reads_layout_1() {
        let record = record();
        let json = {
            let mut header = record.clone();
            header.embedding.clear();
            header.objects[0].embedding.clear();
            header.faces[0].embedding.clear();
            serde_json::to_vec(&header).unwrap()
        };
        let mut bytes = 9u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&json);
        for value in [&record.embedding, &record.objects[0].embedding, &record.faces[0].embedding].into_iter().flatten()
        {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        assert_eq!(decode_layout_1(&bytes).unwrap(), (9, record));
        assert!(decode_layout_1(&bytes[..bytes.len() - 4]).is_err());
    }
}
