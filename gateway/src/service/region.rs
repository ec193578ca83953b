//! Region search's query embedding: a box a client drew on a photo, in the photo's pixels
//! (after EXIF orientation), checked against the photo's size read from its header, placed
//! in the detector's letterbox frame with preprocess's own geometry, then cropped from the
//! full-resolution photo and encoded by the region model (the ingest model's preprocess and
//! box_embed, so the same crop policy and encoder as stored objects). The box the model
//! read back must be the one asked for, so a disagreement on geometry cannot go unnoticed.

use bytes::Bytes;
use crop_core::Letterbox;
use preprocess_core::geometry::{capped_size, letterbox_transform, LetterboxGeometry};
use preprocess_core::DecodeLimits;

use crate::inference::{Inference, PreprocessSettings};
use crate::service::ServiceError;

/// How far the box the region model read back may be from the one asked for, as a share of
/// the photo's longest side: f32 rounding of the two mappings (here to the letterbox, in
/// box_embed back to the photo) is a few units in 1e-7 of the coordinates.
const ECHO_TOLERANCE: f32 = 1e-5;

/// `x1,y1,x2,y2` or a JSON array `[x1, y1, x2, y2]`: four finite numbers.
pub fn parse_box(text: &str) -> Result<[f64; 4], ServiceError> {
    let bad = |why: String| {
        ServiceError::BadRequest(format!(
            "box must be four numbers x1,y1,x2,y2 in the photo's pixels (or a JSON array of them); {why}"
        ))
    };
    let trimmed = text.trim();
    let inner = match trimmed.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']').ok_or_else(|| bad(format!("{trimmed:?} has no closing ']'")))?,
        None => trimmed,
    };
    let numbers = inner
        .split(',')
        .map(|part| {
            let part = part.trim();
            match part.parse::<f64>() {
                Ok(value) if value.is_finite() => Ok(value),
                _ => Err(bad(format!("{part:?} is not a finite number"))),
            }
        })
        .collect::<Result<Vec<f64>, ServiceError>>()?;
    <[f64; 4]>::try_from(numbers.as_slice()).map_err(|_| bad(format!("got {} number(s)", numbers.len())))
}

/// The box inside a `width x height` photo with x1 < x2 and y1 < y2, as f32.
pub fn check_box(b: [f64; 4], width: u32, height: u32) -> Result<[f32; 4], ServiceError> {
    let [x1, y1, x2, y2] = b;
    if x2 <= x1 || y2 <= y1 {
        return Err(ServiceError::BadRequest(format!(
            "box [{x1}, {y1}, {x2}, {y2}] is empty: it needs x1 < x2 and y1 < y2"
        )));
    }
    let (w, h) = (f64::from(width), f64::from(height));
    if x1 < 0.0 || y1 < 0.0 || x2 > w || y2 > h {
        return Err(ServiceError::BadRequest(format!(
            "box [{x1}, {y1}, {x2}, {y2}] is not inside the {width}x{height} photo (after EXIF orientation): \
             x must be in [0, {width}], y in [0, {height}]"
        )));
    }
    Ok(b.map(|v| v as f32))
}

/// The box in the detector's letterbox pixels, where box_embed expects detections: the
/// photo's pixels scaled to preprocess's capped `original`, then its letterbox transform,
/// computed as preprocess computes them for a `width x height` photo.
pub fn to_letterbox(b: [f32; 4], width: u32, height: u32, settings: &PreprocessSettings) -> [f32; 4] {
    let (original_width, original_height) = capped_size(width, height, settings.original_max_side);
    let geometry = LetterboxGeometry::fit(width, height, settings.yolo_size);
    let [scale, pad_x, pad_y] = letterbox_transform(&geometry, original_width, original_height);
    let (sx, sy) = (original_width as f32 / width as f32, original_height as f32 / height as f32);
    let letterbox = Letterbox { scale, pad_x, pad_y };
    letterbox.to_letterbox([b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy])
}

/// The L2-normalised embedding of `bbox` (photo pixels) cropped from `image`.
/// `max_image_bytes` bounds the header read, as preprocess bounds its decode.
pub async fn embed(
    inference: &dyn Inference,
    image: Bytes,
    bbox: [f64; 4],
    max_image_bytes: usize,
) -> Result<Vec<f32>, ServiceError> {
    let settings = inference.preprocess_settings().await?;
    let limits = DecodeLimits { max_bytes: max_image_bytes, max_pixels: settings.max_pixels };
    let (width, height) =
        preprocess_core::oriented_size(&image, &limits).map_err(|err| ServiceError::Unprocessable(err.to_string()))?;
    let asked = check_box(bbox, width, height)?;
    let region = inference.embed_region(image, to_letterbox(asked, width, height, &settings)).await?;
    if (region.width, region.height) != (width, height) {
        return Err(ServiceError::BadGateway(format!(
            "the region model decoded the photo as {}x{}, its header says {width}x{height}",
            region.width, region.height
        )));
    }
    let tolerance = ECHO_TOLERANCE * width.max(height) as f32;
    if asked.iter().zip(&region.bbox).any(|(a, b)| (a - b).abs() > tolerance) {
        return Err(ServiceError::BadGateway(format!(
            "the region model cropped {:?}, not the box asked for {asked:?} (tolerance {tolerance} pixels): \
             its letterbox geometry disagrees with the gateway's",
            region.bbox
        )));
    }
    region.embedding.ok_or_else(|| {
        let (original_width, original_height) = capped_size(width, height, settings.original_max_side);
        ServiceError::BadRequest(format!(
            "box {asked:?} is too small to crop: under the crop stage's min_box_size once scaled to the \
             {original_width}x{original_height} pixels it crops from (preprocess's original_max_side)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// preprocess's settings in the shipped model repository.
    const SETTINGS: PreprocessSettings =
        PreprocessSettings { yolo_size: 640, original_max_side: 1920, max_pixels: 1 << 30 };

    #[test]
    fn boxes_are_four_finite_numbers_in_either_form() {
        assert_eq!(parse_box(" 1, 2.5,3e2 ,4 ").unwrap(), [1.0, 2.5, 300.0, 4.0]);
        assert_eq!(parse_box("[10, 20, 30, 40]").unwrap(), [10.0, 20.0, 30.0, 40.0]);
        for (text, needle) in [
            ("1,2,3", "got 3 number(s)"),
            ("1,2,3,4,5", "got 5 number(s)"),
            ("", "\"\" is not a finite number"),
            ("1,2,NaN,4", "\"NaN\" is not a finite number"),
            ("1,2,inf,4", "\"inf\" is not a finite number"),
            ("[1,2,3,4", "no closing ']'"),
            ("1;2;3;4", "\"1;2;3;4\" is not a finite number"),
        ] {
            let err = parse_box(text).unwrap_err();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn boxes_must_lie_inside_the_photo_and_not_be_empty() {
        assert_eq!(check_box([0.0, 0.0, 640.0, 480.0], 640, 480).unwrap(), [0.0, 0.0, 640.0, 480.0]);
        for (b, needle) in [
            ([10.0, 10.0, 10.0, 20.0], "x1 < x2"),
            ([10.0, 30.0, 20.0, 20.0], "x1 < x2 and y1 < y2"),
            ([-1.0, 0.0, 10.0, 10.0], "not inside the 640x480 photo"),
            ([0.0, 0.0, 641.0, 10.0], "x must be in [0, 640]"),
            ([0.0, 0.0, 10.0, 480.5], "y in [0, 480]"),
        ] {
            let err = check_box(b, 640, 480).unwrap_err().to_string();
            assert!(err.contains(needle), "{b:?}: {err}");
        }
    }

    /// box_embed's way back (crop-core's `to_original`, then the scale to the photo) returns
    /// the box the gateway sent, including for a photo over the cap.
    #[test]
    fn letterbox_mapping_is_undone_by_box_embeds() {
        for (width, height, b) in [
            (640u32, 426u32, [12.5f32, 30.0, 600.0, 420.0]),
            (427, 640, [0.0, 0.0, 427.0, 640.0]),
            (8000, 6000, [1234.5, 987.25, 7999.0, 5999.5]),
            (3, 5000, [0.0, 10.0, 3.0, 4990.0]),
        ] {
            let lb = to_letterbox(b, width, height, &SETTINGS);
            let (ow, oh) = capped_size(width, height, SETTINGS.original_max_side);
            let geometry = LetterboxGeometry::fit(width, height, SETTINGS.yolo_size);
            let [scale, pad_x, pad_y] = letterbox_transform(&geometry, ow, oh);
            let original = Letterbox::new(scale, pad_x, pad_y).unwrap().to_original(lb);
            let (sx, sy) = (width as f32 / ow as f32, height as f32 / oh as f32);
            let back = [original[0] * sx, original[1] * sy, original[2] * sx, original[3] * sy];
            let tolerance = ECHO_TOLERANCE * width.max(height) as f32;
            for (a, r) in b.iter().zip(back) {
                assert!((a - r).abs() <= tolerance, "{width}x{height}: {b:?} came back as {back:?}");
            }
        }
        // A 640x426 photo sits 107 rows down the 640 square at scale 1.
        assert_eq!(to_letterbox([10.0, 20.0, 30.0, 40.0], 640, 426, &SETTINGS), [10.0, 127.0, 30.0, 147.0]);
    }
}
