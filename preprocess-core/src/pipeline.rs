//! [`Preprocessor`]: one encoded photo -> every output of the stage, from one decode:
//! the YOLO letterbox, the CLIP shorter-side resize and centre crop, the capped original,
//! the letterbox transform for `box_embed`, and the photo's size. The three pixel branches
//! run in parallel (rayon), which matters for a lone large photo; the backend parallelises
//! across the photos of a batch as well.

use crate::budget::PixelBudget;
use crate::decode::{decode_admitted, DecodeLimits};
use crate::error::PreprocessError;
use crate::geometry::{capped_size, center_crop_offsets, letterbox_transform, shorter_side_resize, LetterboxGeometry};
use crate::resample::{resize_antialiased, resize_antialiased_window, resize_interpolated, write_planar, Rgb8Image};
use std::time::Duration;

/// The output sizes and padding of the stage (validated by the caller: every size >= 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageSizes {
    /// Side of the square YOLO input.
    pub yolo_size: u32,
    /// Side of the square CLIP input (shorter side resized to it, then centre-cropped).
    pub clip_size: u32,
    /// Grey level of the letterbox padding, before / 255.
    pub pad_value: u8,
    /// Longest side of the `original` output.
    pub original_max_side: u32,
}

/// Everything the stage outputs for one photo.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    /// `[3, yolo_size, yolo_size]`, RGB / 255.
    pub yolo_input: Vec<f32>,
    /// `[3, clip_size, clip_size]`, RGB / 255.
    pub clip_input: Vec<f32>,
    /// The decoded photo after EXIF orientation, longest side capped.
    pub original: Rgb8Image,
    /// `(scale, pad_x, pad_y)`: letterbox pixel = `original` pixel * scale + pad.
    pub letterbox: [f32; 3],
    /// `(height, width)` of the decoded photo after EXIF orientation, before the cap.
    pub image_size: [i32; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preprocessor {
    pub sizes: StageSizes,
    pub limits: DecodeLimits,
}

impl Preprocessor {
    /// Decodes `encoded` within `budget` (waiting at most `wait` for its pixels, which stay
    /// reserved until every output is computed) and computes the outputs.
    pub fn run(&self, encoded: &[u8], budget: &PixelBudget, wait: Duration) -> Result<Preprocessed, PreprocessError> {
        let (decoded, _reservation) =
            decode_admitted(encoded, &self.limits, |pixels| Ok(budget.reserve(pixels, wait)?))?;
        self.from_decoded(decoded)
    }

    /// The three branches over an already decoded, oriented photo.
    pub fn from_decoded(&self, decoded: Rgb8Image) -> Result<Preprocessed, PreprocessError> {
        let sizes = self.sizes;
        let image_size = [saturating_i32(decoded.height), saturating_i32(decoded.width)];
        let geometry = LetterboxGeometry::fit(decoded.width, decoded.height, sizes.yolo_size);
        let ((yolo_input, clip_input), original) = rayon::join(
            || rayon::join(|| letterbox(&decoded, &geometry, &sizes), || clip(&decoded, sizes.clip_size)),
            || cap(&decoded, sizes.original_max_side),
        );
        let original = match original? {
            Some(capped) => capped,
            None => decoded,
        };
        let letterbox = letterbox_transform(&geometry, original.width, original.height);
        Ok(Preprocessed { yolo_input: yolo_input?, clip_input: clip_input?, original, letterbox, image_size })
    }
}

fn letterbox(
    decoded: &Rgb8Image,
    geometry: &LetterboxGeometry,
    sizes: &StageSizes,
) -> Result<Vec<f32>, PreprocessError> {
    let side = sizes.yolo_size;
    let resized = resize_interpolated(decoded, geometry.resized_width, geometry.resized_height)?;
    let mut out = vec![f32::from(sizes.pad_value) / 255.0; 3 * side as usize * side as usize];
    write_planar(&resized, &mut out, (side, side), (geometry.left, geometry.top));
    Ok(out)
}

fn clip(decoded: &Rgb8Image, side: u32) -> Result<Vec<f32>, PreprocessError> {
    let full = shorter_side_resize(decoded.width, decoded.height, side);
    let offsets = center_crop_offsets(full.0, full.1, side);
    let cropped = resize_antialiased_window(decoded, full, offsets, side)?;
    let mut out = vec![0.0; 3 * side as usize * side as usize];
    write_planar(&cropped, &mut out, (side, side), (0, 0));
    Ok(out)
}

/// The capped copy, or `None` when the photo is within the cap (it is then used as is).
fn cap(decoded: &Rgb8Image, max_side: u32) -> Result<Option<Rgb8Image>, PreprocessError> {
    let (width, height) = capped_size(decoded.width, decoded.height, max_side);
    if (width, height) == (decoded.width, decoded.height) {
        return Ok(None);
    }
    resize_antialiased(decoded, width, height).map(Some)
}

fn saturating_i32(side: u32) -> i32 {
    i32::try_from(side).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preprocessor() -> Preprocessor {
        Preprocessor {
            sizes: StageSizes { yolo_size: 64, clip_size: 32, pad_value: 114, original_max_side: 100 },
            limits: DecodeLimits { max_bytes: 1 << 20, max_pixels: 1 << 20 },
        }
    }

    fn flat(width: u32, height: u32, value: u8) -> Rgb8Image {
        Rgb8Image::new(width, height, vec![value; width as usize * height as usize * 3])
    }

    #[test]
    fn shapes_padding_and_transform() {
        let out = preprocessor().from_decoded(flat(200, 100, 255)).unwrap();
        assert_eq!(out.image_size, [100, 200]);
        assert_eq!((out.original.width, out.original.height), (100, 50));
        // Letterbox 64x32 at top 16: scale from the capped original is 64/100.
        assert_eq!(out.letterbox, [0.64, 0.0, 16.0]);
        assert_eq!(out.yolo_input.len(), 3 * 64 * 64);
        let pad = 114.0 / 255.0;
        for plane in out.yolo_input.chunks_exact(64 * 64) {
            assert!(plane[..16 * 64].iter().all(|&v| v == pad));
            assert!(plane[16 * 64..48 * 64].iter().all(|&v| v == 1.0));
            assert!(plane[48 * 64..].iter().all(|&v| v == pad));
        }
        assert_eq!(out.clip_input.len(), 3 * 32 * 32);
        assert!(out.clip_input.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn one_pixel_photo_fills_every_output() {
        let out = preprocessor().from_decoded(Rgb8Image::new(1, 1, vec![10, 20, 30])).unwrap();
        assert_eq!(out.image_size, [1, 1]);
        assert_eq!(out.letterbox, [64.0, 0.0, 0.0]);
        assert_eq!(out.original.pixels, [10, 20, 30]);
        assert!(out.yolo_input[..64 * 64].iter().all(|&v| v == 10.0 / 255.0));
        assert!(out.clip_input[32 * 32..2 * 32 * 32].iter().all(|&v| v == 20.0 / 255.0));
    }
}
