//! [`ImageView`]: a borrowed, size-checked UINT8 HWC RGB image, the input of
//! ROI-align.

use crate::CropError;
use std::fmt;

/// A borrowed HWC RGB image with 8-bit channels, `width * height * 3` bytes.
#[derive(Clone, Copy)]
pub struct ImageView<'a> {
    data: &'a [u8],
    width: usize,
    height: usize,
}

impl<'a> ImageView<'a> {
    /// Wraps `data`, checking that it holds exactly one non-empty RGB image.
    pub fn new(data: &'a [u8], width: usize, height: usize) -> Result<Self, CropError> {
        if width == 0 || height == 0 {
            return Err(CropError::EmptyImage { width, height });
        }
        let expected = width.checked_mul(height).and_then(|n| n.checked_mul(3));
        if expected != Some(data.len()) {
            return Err(CropError::ImageLength {
                len: data.len(),
                width,
                height,
                expected: expected.unwrap_or(usize::MAX),
            });
        }
        Ok(Self { data, width, height })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixels, row-major, three bytes (R, G, B) per pixel.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
}

// The pixels are left out: printing megabytes of bytes helps nobody.
impl fmt::Debug for ImageView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageView").field("width", &self.width).field("height", &self.height).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_length_and_size() {
        let data = [0u8; 7 * 5 * 3];
        let view = ImageView::new(&data, 7, 5).unwrap();
        assert_eq!((view.width(), view.height(), view.data().len()), (7, 5, 105));
        assert!(matches!(ImageView::new(&data, 5, 5), Err(CropError::ImageLength { expected: 75, .. })));
        assert!(matches!(ImageView::new(&[], 0, 5), Err(CropError::EmptyImage { .. })));
        assert!(matches!(ImageView::new(&data, usize::MAX, 3), Err(CropError::ImageLength { .. })));
    }
}
