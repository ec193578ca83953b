//! [`Rgb8Image`] and the two bilinear resamplers of the stage, both over
//! `fast_image_resize` (SIMD, fixed-point like the references):
//!
//! - [`resize_interpolated`]: bilinear with a fixed 2x2 footprint, pixel centres at +0.5,
//!   edges clamped: OpenCV's `INTER_LINEAR`, which Ultralytics' letterbox uses (no
//!   antialiasing when shrinking);
//! - [`resize_antialiased`] / [`resize_antialiased_window`]: bilinear convolution whose
//!   support widens with the shrink factor: PIL's `Image.resize(..., BILINEAR)`, which
//!   torchvision's `Resize` on a PIL image calls.
//!
//! And [`write_planar`], HWC u8 -> CHW f32 / 255 into an output tensor.

use crate::error::PreprocessError;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

/// Interleaved RGB, 8 bits per sample, rows top to bottom (the `original` tensor's layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8Image {
    pub width: u32,
    pub height: u32,
    /// `height * width * 3` samples.
    pub pixels: Vec<u8>,
}

impl Rgb8Image {
    /// # Panics
    /// If `pixels` does not hold exactly `width * height * 3` samples (a programming error).
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Self {
        assert_eq!(pixels.len(), width as usize * height as usize * 3, "{width}x{height} RGB8 buffer");
        Self { width, height, pixels }
    }

    fn view(&self) -> Result<ImageRef<'_>, PreprocessError> {
        ImageRef::new(self.width, self.height, &self.pixels, PixelType::U8x3)
            .map_err(|e| PreprocessError::Resample(e.to_string()))
    }
}

/// OpenCV `INTER_LINEAR` resize to `width x height`.
pub fn resize_interpolated(src: &Rgb8Image, width: u32, height: u32) -> Result<Rgb8Image, PreprocessError> {
    resize(src, width, height, ResizeOptions::new().resize_alg(ResizeAlg::Interpolation(FilterType::Bilinear)))
}

/// PIL `BILINEAR` resize to `width x height` (antialiased when shrinking).
pub fn resize_antialiased(src: &Rgb8Image, width: u32, height: u32) -> Result<Rgb8Image, PreprocessError> {
    resize(src, width, height, ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)))
}

/// The `window x window` block at (`left`, `top`) of what [`resize_antialiased`] to
/// `full_width x full_height` would produce, computed without producing the rest: the
/// source region handed to the filter is the window's footprint at the full resize's scale,
/// so every output pixel has the same centre and filter as in the full resize (the filter
/// still reads source pixels outside the region, as PIL's `box` argument does). This keeps
/// a photo with an extreme aspect ratio from needing a huge intermediate image.
pub fn resize_antialiased_window(
    src: &Rgb8Image,
    (full_width, full_height): (u32, u32),
    (left, top): (u32, u32),
    window: u32,
) -> Result<Rgb8Image, PreprocessError> {
    if (full_width, full_height) == (window, window) {
        return resize_antialiased(src, window, window);
    }
    let scale_x = f64::from(src.width) / f64::from(full_width);
    let scale_y = f64::from(src.height) / f64::from(full_height);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(
        f64::from(left) * scale_x,
        f64::from(top) * scale_y,
        f64::from(window) * scale_x,
        f64::from(window) * scale_y,
    );
    resize(src, window, window, options)
}

fn resize(src: &Rgb8Image, width: u32, height: u32, options: ResizeOptions) -> Result<Rgb8Image, PreprocessError> {
    if (src.width, src.height) == (width, height) && matches!(options.cropping, fast_image_resize::SrcCropping::None) {
        return Ok(src.clone());
    }
    let mut dst = Image::new(width, height, PixelType::U8x3);
    Resizer::new()
        .resize(&src.view()?, &mut dst, &options)
        .map_err(|e| PreprocessError::Resample(format!("{}x{} -> {width}x{height}: {e}", src.width, src.height)))?;
    Ok(Rgb8Image::new(width, height, dst.into_vec()))
}

/// Writes `src` as planar RGB / 255 into `out`, a `[3, out_height, out_width]` tensor, with
/// its top-left pixel at (`left`, `top`); the rest of `out` is left as it is (the caller
/// fills the padding).
///
/// # Panics
/// If `src` placed at (`left`, `top`) does not fit in the tensor (a programming error).
pub fn write_planar(src: &Rgb8Image, out: &mut [f32], (out_width, out_height): (u32, u32), (left, top): (u32, u32)) {
    let (ow, oh) = (out_width as usize, out_height as usize);
    let (w, left, top) = (src.width as usize, left as usize, top as usize);
    assert!(left + w <= ow && top + src.height as usize <= oh && out.len() == 3 * ow * oh, "planar placement");
    let (red, rest) = out.split_at_mut(ow * oh);
    let (green, blue) = rest.split_at_mut(ow * oh);
    for (y, row) in src.pixels.chunks_exact(w * 3).enumerate() {
        let start = (top + y) * ow + left;
        let planes =
            red[start..start + w].iter_mut().zip(&mut green[start..start + w]).zip(&mut blue[start..start + w]);
        for (((r, g), b), rgb) in planes.zip(row.chunks_exact(3)) {
            *r = f32::from(rgb[0]) / 255.0;
            *g = f32::from(rgb[1]) / 255.0;
            *b = f32::from(rgb[2]) / 255.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32) -> Rgb8Image {
        let pixels = (0..height)
            .flat_map(|y| (0..width).flat_map(move |x| [(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8]))
            .collect();
        Rgb8Image::new(width, height, pixels)
    }

    #[test]
    fn window_equals_the_same_block_of_the_full_resize() {
        let src = gradient(37, 23);
        let full = resize_antialiased(&src, 27, 17).unwrap();
        let window = resize_antialiased_window(&src, (27, 17), (5, 2), 12).unwrap();
        fn at(img: &Rgb8Image, x: usize, y: usize) -> &[u8] {
            &img.pixels[(y * img.width as usize + x) * 3..][..3]
        }
        for y in 0..12usize {
            for x in 0..12usize {
                assert_eq!(at(&window, x, y), at(&full, x + 5, y + 2), "pixel {x},{y}");
            }
        }
    }

    #[test]
    fn interpolated_upscale_of_two_pixels_is_linear_with_clamped_edges() {
        // cv2.resize(np.array([[0, 200]]), (4, 1), INTER_LINEAR) = [0, 50, 150, 200].
        let src = Rgb8Image::new(2, 1, vec![0, 0, 0, 200, 200, 200]);
        let out = resize_interpolated(&src, 4, 1).unwrap();
        let red: Vec<u8> = out.pixels.chunks_exact(3).map(|p| p[0]).collect();
        assert_eq!(red, [0, 50, 150, 200]);
    }

    #[test]
    fn planar_places_and_scales() {
        let src = Rgb8Image::new(1, 2, vec![255, 0, 51, 0, 255, 102]);
        let mut out = vec![-1.0f32; 3 * 3 * 2];
        write_planar(&src, &mut out, (3, 2), (2, 0));
        assert_eq!(&out[..6], &[-1.0, -1.0, 1.0, -1.0, -1.0, 0.0]);
        assert_eq!(&out[6..12], &[-1.0, -1.0, 0.0, -1.0, -1.0, 1.0]);
        assert_eq!(&out[12..], &[-1.0, -1.0, 0.2, -1.0, -1.0, 0.4]);
    }
}
