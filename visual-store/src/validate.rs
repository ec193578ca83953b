//! The rules both stores apply to queries and records before touching storage, so that a
//! bad request gets the same `InvalidQuery` / `InvalidRecord` message from either store.

use std::fmt::Display;

use crate::{ImageRecord, Page, Result, SearchFilter, StoreError};

/// Most objects (and, separately, faces) one record may carry; the embedded store packs
/// the index into the low 16 bits of a vector key.
pub const MAX_PARTS_PER_IMAGE: usize = 1 << 16;

/// Longest id in bytes: OpenSearch's limit on `_id`. A longer one fails a whole `_bulk`
/// request (`action_request_validation_exception`), not just its item, so it is refused
/// here, per record, in both stores.
pub const MAX_ID_BYTES: usize = 512;

/// Bounds on what one search may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryLimits {
    /// Largest `Page::k`.
    pub max_k: usize,
    /// Largest `offset + k` (OpenSearch's default `index.max_result_window` is 10,000).
    pub max_window: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits { max_k: 1000, max_window: 10_000 }
    }
}

/// Checks a search request. `dimension` is the store's vector length, `None` while an
/// embedded store has not seen its first record (any length is then accepted).
pub fn check_query(
    query: &[f32],
    filter: &SearchFilter,
    page: Page,
    limits: QueryLimits,
    dimension: Option<usize>,
) -> Result<()> {
    let invalid = |message: String| Err(StoreError::InvalidQuery(message));
    if page.k == 0 {
        return invalid("k must be at least 1".into());
    }
    if page.k > limits.max_k {
        return invalid(format!("k = {} exceeds the maximum of {}", page.k, limits.max_k));
    }
    if page.offset.saturating_add(page.k) > limits.max_window {
        return invalid(format!(
            "offset + k = {} exceeds the result window of {}",
            page.offset.saturating_add(page.k),
            limits.max_window
        ));
    }
    if query.is_empty() {
        return invalid("the query vector is empty".into());
    }
    if let Some(expected) = dimension {
        if query.len() != expected {
            return invalid(format!("the query vector has {} dimensions, the store holds {expected}", query.len()));
        }
    }
    if let Some(position) = query.iter().position(|v| !v.is_finite()) {
        return invalid(format!("the query vector has a non-finite value at index {position}"));
    }
    if query.iter().all(|v| *v == 0.0) {
        return invalid("the query vector is all zeros (no direction to compare)".into());
    }
    if !(0.0..=1.0).contains(&filter.min_confidence) {
        return invalid(format!("min_confidence = {} is outside [0, 1]", filter.min_confidence));
    }
    if let (Some(from), Some(to)) = (filter.created_from, filter.created_to) {
        if from > to {
            return invalid(format!("created_from = {from} is after created_to = {to}"));
        }
    }
    Ok(())
}

/// Checks a record before it is stored: id, vector lengths, and every float (vectors,
/// object and face scores, boxes, landmarks), each error naming the field. Returns its
/// vector length. `dimension` as in [`check_query`].
pub fn check_record(record: &ImageRecord, dimension: Option<usize>) -> Result<usize> {
    check_header(record)?;
    let dim = dimension.unwrap_or(record.embedding.len());
    if dim == 0 {
        return Err(refused(record, "the embedding is empty".into()));
    }
    // (list, index) names the field only when it is refused.
    let vectors = std::iter::once((None, &record.embedding))
        .chain(record.objects.iter().enumerate().map(|(i, o)| (Some(("objects", i)), &o.embedding)))
        .chain(record.faces.iter().enumerate().map(|(i, f)| (Some(("faces", i)), &f.embedding)));
    for (part, vector) in vectors {
        let name = || match part {
            None => "embedding".to_string(),
            Some((list, i)) => format!("{list}[{i}].embedding"),
        };
        if vector.len() != dim {
            return Err(refused(record, format!("{} has {} dimensions, expected {dim}", name(), vector.len())));
        }
        if vector.iter().any(|v| !v.is_finite()) {
            return Err(refused(record, format!("{} has a non-finite value", name())));
        }
        if vector.iter().all(|v| *v == 0.0) {
            return Err(refused(record, format!("{} is all zeros", name())));
        }
    }
    Ok(dim)
}

/// Everything [`check_record`] checks except the vectors: the id, the number of parts, every
/// score, box and landmark. The embedded store's open checks stored headers with it and
/// leaves the vectors of records its saved graphs already hold unread.
pub fn check_header(record: &ImageRecord) -> Result<()> {
    let refuse = |message: String| refused(record, message);
    if record.id.is_empty() {
        return Err(refuse("the id is empty".into()));
    }
    if record.id.len() > MAX_ID_BYTES {
        return Err(refuse(format!("the id is {} bytes long, the limit is {MAX_ID_BYTES}", record.id.len())));
    }
    if record.objects.len() > MAX_PARTS_PER_IMAGE || record.faces.len() > MAX_PARTS_PER_IMAGE {
        return Err(refuse(format!("more than {MAX_PARTS_PER_IMAGE} objects or faces")));
    }
    for (i, object) in record.objects.iter().enumerate() {
        check_score(&format_args!("objects[{i}].confidence"), object.confidence).map_err(refuse)?;
        check_box(&format_args!("objects[{i}].bbox"), object.bbox).map_err(refuse)?;
    }
    for (i, face) in record.faces.iter().enumerate() {
        check_score(&format_args!("faces[{i}].confidence"), face.confidence).map_err(refuse)?;
        check_box(&format_args!("faces[{i}].bbox"), face.bbox).map_err(refuse)?;
        for (p, point) in face.landmarks.iter().enumerate() {
            for (axis, value) in ["x", "y"].into_iter().zip(point) {
                check_coordinate(&format_args!("faces[{i}].landmarks[{p}].{axis}"), *value).map_err(refuse)?;
            }
        }
    }
    Ok(())
}

fn refused(record: &ImageRecord, message: String) -> StoreError {
    StoreError::InvalidRecord(format!("image {:?}: {message}", record.id))
}

/// Largest magnitude of a box or landmark coordinate, in pixels: 2^24, past which an f32
/// no longer holds every whole pixel (a JPEG side is at most 65,535). Coordinates may lie
/// outside the photo (a face cut by its edge keeps the detector's box), so the bound is
/// not the photo's size.
pub const MAX_COORDINATE: f32 = (1 << 24) as f32;

/// A detector score: finite and in [0, 1]. Field names are formatted only for a refusal:
/// opening a store checks the header of every stored record.
fn check_score(field: &dyn Display, value: f32) -> std::result::Result<(), String> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("{field} = {value} is not a score in [0, 1]"))
    }
}

fn check_coordinate(field: &dyn Display, value: f32) -> std::result::Result<(), String> {
    if value.is_finite() && value.abs() <= MAX_COORDINATE {
        Ok(())
    } else {
        Err(format!("{field} = {value} is not a pixel coordinate (finite, magnitude at most {MAX_COORDINATE})"))
    }
}

/// x1, y1, x2, y2: each a coordinate, x1 <= x2 and y1 <= y2 (an empty box is allowed).
fn check_box(field: &dyn Display, bbox: [f32; 4]) -> std::result::Result<(), String> {
    for (corner, value) in ["x1", "y1", "x2", "y2"].into_iter().zip(bbox) {
        check_coordinate(&format_args!("{field}.{corner}"), value)?;
    }
    let [x1, y1, x2, y2] = bbox;
    if x1 > x2 || y1 > y2 {
        return Err(format!("{field} = {bbox:?} has x1 > x2 or y1 > y2"));
    }
    Ok(())
}

/// Cosine similarity of two equal-length vectors (not assumed normalised). Eight
/// independent accumulators per sum let the compiler vectorise the loop (a single running
/// f32 sum cannot be reordered); the exact-scan path spends its time here.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let (mut dot, mut norm_a, mut norm_b) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
    let (chunks_a, chunks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = chunks_a.remainder().iter().zip(chunks_b.remainder());
    for (x, y) in chunks_a.zip(chunks_b) {
        for lane in 0..LANES {
            dot[lane] += x[lane] * y[lane];
            norm_a[lane] += x[lane] * x[lane];
            norm_b[lane] += y[lane] * y[lane];
        }
    }
    let (mut dot, mut norm_a, mut norm_b) =
        (dot.iter().sum::<f32>(), norm_a.iter().sum::<f32>(), norm_b.iter().sum::<f32>());
    for (x, y) in tail {
        dot += x * y;
        norm_a += x * x;
        norm_b += y * y;
    }
    let denominator = (norm_a * norm_b).sqrt();
    if denominator == 0.0 {
        0.0
    } else {
        (dot / denominator).clamp(-1.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FaceRecord, ObjectRecord};

    fn page(k: usize, offset: usize) -> Page {
        Page { k, offset }
    }

    #[test]
    fn rejects_bad_queries_with_the_reason() {
        let limits = QueryLimits::default();
        let filter = SearchFilter::default();
        let q = [1.0, 0.0];
        let message = |r: Result<()>| r.unwrap_err().to_string();
        assert!(message(check_query(&q, &filter, page(0, 0), limits, Some(2))).contains("k must be at least 1"));
        assert!(message(check_query(&q, &filter, page(1001, 0), limits, Some(2))).contains("maximum of 1000"));
        assert!(message(check_query(&q, &filter, page(10, 9995), limits, Some(2))).contains("result window"));
        assert!(message(check_query(&q, &filter, page(10, 0), limits, Some(3)))
            .contains("has 2 dimensions, the store holds 3"));
        assert!(message(check_query(&[f32::NAN, 1.0], &filter, page(10, 0), limits, Some(2)))
            .contains("non-finite value at index 0"));
        assert!(message(check_query(&[0.0, 0.0], &filter, page(10, 0), limits, Some(2))).contains("all zeros"));
        assert!(check_query(&q, &filter, page(10, 0), limits, None).is_ok());
    }

    #[test]
    fn rejects_an_id_opensearch_would_refuse() {
        let record = |id: String| ImageRecord {
            id,
            width: 1,
            height: 1,
            created_at: 0,
            tags: vec![],
            metadata: serde_json::json!({}),
            embedding: vec![1.0],
            objects: vec![],
            faces: vec![],
        };
        assert!(check_record(&record("a".repeat(MAX_ID_BYTES)), None).is_ok());
        let message = check_record(&record("a".repeat(MAX_ID_BYTES + 1)), None).unwrap_err().to_string();
        assert!(message.contains("513 bytes long, the limit is 512"), "{message}");
    }

    /// Every float of a record is checked, and the error names the field.
    #[test]
    fn rejects_bad_floats_naming_the_field() {
        let good = ImageRecord {
            id: "a".into(),
            width: 100,
            height: 80,
            created_at: 0,
            tags: vec![],
            metadata: serde_json::json!({}),
            embedding: vec![1.0, 0.0],
            objects: vec![ObjectRecord {
                class_id: 0,
                class_name: "dog".into(),
                confidence: 0.5,
                bbox: [-3.0, 1.0, 30.0, 40.0],
                embedding: vec![0.0, 1.0],
            }],
            faces: vec![FaceRecord {
                confidence: 1.0,
                bbox: [5.0, 5.0, 5.0, 20.0],
                landmarks: [[6.0, 7.0]; 5],
                embedding: vec![0.6, 0.8],
            }],
        };
        assert_eq!(check_record(&good, Some(2)).unwrap(), 2);
        type Change = fn(&mut ImageRecord);
        let cases: [(Change, &str); 14] = [
            (|r| r.embedding[1] = f32::INFINITY, "embedding has a non-finite value"),
            (|r| r.objects[0].embedding[0] = f32::NAN, "objects[0].embedding has a non-finite value"),
            (|r| r.faces[0].embedding = vec![0.0, 0.0], "faces[0].embedding is all zeros"),
            (|r| r.objects[0].confidence = f32::NAN, "objects[0].confidence = NaN is not a score in [0, 1]"),
            (|r| r.objects[0].confidence = 1.5, "objects[0].confidence = 1.5 is not a score"),
            (|r| r.objects[0].bbox[2] = f32::NAN, "objects[0].bbox.x2 = NaN is not a pixel coordinate"),
            (|r| r.objects[0].bbox[1] = -1e30, "objects[0].bbox.y1 = -1000000000000000000000000000000 is not a pixel"),
            (|r| r.objects[0].bbox = [10.0, 0.0, 9.0, 5.0], "objects[0].bbox = [10.0, 0.0, 9.0, 5.0] has x1 > x2"),
            (|r| r.faces[0].confidence = f32::NEG_INFINITY, "faces[0].confidence = -inf is not a score"),
            (|r| r.faces[0].confidence = -0.01, "faces[0].confidence = -0.01 is not a score"),
            (|r| r.faces[0].bbox[3] = f32::INFINITY, "faces[0].bbox.y2 = inf is not a pixel coordinate"),
            (|r| r.faces[0].bbox = [0.0, 9.0, 5.0, 8.0], "faces[0].bbox = [0.0, 9.0, 5.0, 8.0] has x1 > x2 or y1 > y2"),
            (|r| r.faces[0].landmarks[3][0] = f32::NAN, "faces[0].landmarks[3].x = NaN is not a pixel coordinate"),
            (|r| r.faces[0].landmarks[4][1] = 3e7, "faces[0].landmarks[4].y = 30000000 is not a pixel coordinate"),
        ];
        for (change, expected) in cases {
            let mut record = good.clone();
            change(&mut record);
            match check_record(&record, Some(2)) {
                Err(StoreError::InvalidRecord(message)) => {
                    assert!(message.starts_with("image \"a\": "), "{message}");
                    assert!(message.contains(expected), "{message:?} lacks {expected:?}");
                }
                other => panic!("expected InvalidRecord({expected}), got {other:?}"),
            }
        }
    }

    #[test]
    fn cosine_ignores_length() {
        assert!((cosine(&[2.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(cosine(&[1.0, 0.0], &[-3.0, 0.0]), -1.0);
        let long: Vec<f32> = (0..21).map(|i| i as f32).collect();
        assert!((cosine(&long, &long) - 1.0).abs() < 1e-6);
    }
}
