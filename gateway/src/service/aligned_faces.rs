//! The faces as face_align gave them to the encoder, re-created in the gateway rather than
//! shipped out of Triton: the photo decoded and capped as preprocess makes `original`, each
//! face warped from its `original`-frame landmarks with the align model's own settings,
//! encoded as base64 PNG. Pure pixel work over `preprocess-core` and `crop-core`.

use base64::Engine;
use bytes::Bytes;
use crop_core::{face_to_rgb8, warp_face_into, FaceAligner, ImageView};
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use preprocess_core::geometry::capped_size;
use preprocess_core::resample::resize_antialiased;
use preprocess_core::DecodeLimits;

use crate::inference::{DetectedFace, Inference};
use crate::service::pixel_budget::PixelBudget;
use crate::service::ServiceError;

/// One crop per face in `faces` order; `None` where face_align rejected the landmarks.
/// `max_image_bytes` bounds the upload; the pixel bound is preprocess's own `max_pixels`,
/// and the decode waits for its pixels in the process-wide `budget`.
pub async fn aligned_faces(
    inference: &dyn Inference,
    budget: &PixelBudget,
    image: Bytes,
    faces: &[DetectedFace],
    max_image_bytes: usize,
) -> Result<Vec<Option<String>>, ServiceError> {
    if faces.is_empty() {
        return Ok(Vec::new());
    }
    let alignment = inference.face_alignment().await?;
    let landmarks: Vec<[[f32; 2]; 5]> = faces.iter().map(|face| face.detector_landmarks).collect();
    let limits = DecodeLimits { max_bytes: max_image_bytes, max_pixels: alignment.preprocess.max_pixels };
    let original_max_side = alignment.preprocess.original_max_side;
    // The header names the size; one that cannot be read reserves the most a decode may take.
    let pixels = header_pixels(&image).unwrap_or(limits.max_pixels);
    let _reserved = budget.reserve(pixels).await?;
    // Decoding and warping are CPU work: off the async workers.
    tokio::task::spawn_blocking(move || render(&image, &landmarks, &alignment.aligner, limits, original_max_side))
        .await
        .map_err(|err| ServiceError::Internal(format!("aligning faces: {err}")))?
}

/// Width x height from the photo's header, without decoding its pixels.
fn header_pixels(image: &[u8]) -> Option<u64> {
    let reader = image::ImageReader::new(std::io::Cursor::new(image)).with_guessed_format().ok()?;
    let (width, height) = reader.into_dimensions().ok()?;
    Some(u64::from(width) * u64::from(height))
}

fn render(
    image: &[u8],
    landmarks: &[[[f32; 2]; 5]],
    aligner: &FaceAligner,
    limits: DecodeLimits,
    original_max_side: u32,
) -> Result<Vec<Option<String>>, ServiceError> {
    let decoded =
        preprocess_core::decode(image, &limits).map_err(|err| ServiceError::Unprocessable(err.to_string()))?;
    // preprocess's `original`: the decoded photo, or its antialiased copy when over the cap.
    let (width, height) = capped_size(decoded.width, decoded.height, original_max_side);
    let original = match (width, height) == (decoded.width, decoded.height) {
        true => decoded,
        false => resize_antialiased(&decoded, width, height).map_err(|err| ServiceError::Internal(err.to_string()))?,
    };
    let (width, height) = (original.width as usize, original.height as usize);
    let view =
        ImageView::new(&original.pixels, width, height).map_err(|err| ServiceError::Internal(err.to_string()))?;
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
fn png_base64(rgb: &[u8], side: usize) -> Result<String, ServiceError> {
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(rgb, side as u32, side as u32, ExtendedColorType::Rgb8)
        .map_err(|err| ServiceError::Internal(format!("encoding an aligned face as PNG: {err}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(png))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

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
        let crops = render(&photo, &[shifted, coincident], &aligner, limits, 1920).unwrap();
        assert_eq!(crops.len(), 2);
        assert_eq!(crops[1], None, "rejected landmarks have no crop");
        let face = decoded_png(crops[0].as_ref().unwrap());
        assert_eq!(face.dimensions(), (112, 112));
        for (u, v, pixel) in face.enumerate_pixels() {
            let at = (((v + dy) * width + u + dx) * 3) as usize;
            assert_eq!(pixel.0, [pixels[at], pixels[at + 1], pixels[at + 2]], "({u}, {v})");
        }

        // Over the cap, the landmarks are in the capped `original`: the window is read there.
        let crops = render(&photo, &[shifted], &aligner, limits, 180).unwrap();
        let decoded = preprocess_core::decode(&photo, &limits).unwrap();
        let original = resize_antialiased(&decoded, 180, 144).unwrap();
        let face = decoded_png(crops[0].as_ref().unwrap());
        let at = (((5 + dy) * 180 + 7 + dx) * 3) as usize;
        assert_eq!(face.get_pixel(7, 5).0, [original.pixels[at], original.pixels[at + 1], original.pixels[at + 2]]);

        let err = render(b"not a photo", &[shifted], &aligner, limits, 1920).unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
