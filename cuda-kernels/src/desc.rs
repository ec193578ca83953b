//! Per-crop descriptors, the kernels' view of a batch: which image (by byte
//! offset into one packed buffer of UINT8 HWC RGB images), its size, and where
//! to sample. Their layout is shared with the structs of `kernels.cu`.

use cudarc::driver::DeviceRepr;

/// One ROI-align crop: the region resampled to the square crop and the
/// optional mask box (pad policy), in the image's pixels, as
/// `crop_core::CropRegion` holds them after the policy was applied.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropDesc {
    /// Byte offset of the image's first pixel in the packed image buffer.
    pub image_offset: u64,
    pub width: u32,
    pub height: u32,
    /// `[x1, y1, x2, y2]` sampled into the crop.
    pub roi: [f32; 4],
    mask: [f32; 4],
    has_mask: u32,
    reserved: u32,
}

impl CropDesc {
    pub fn new(image_offset: u64, width: u32, height: u32, roi: [f32; 4], mask: Option<[f32; 4]>) -> Self {
        Self {
            image_offset,
            width,
            height,
            roi,
            mask: mask.unwrap_or([0.0; 4]),
            has_mask: u32::from(mask.is_some()),
            reserved: 0,
        }
    }

    /// Samples outside this box `[x1, y1, x2, y2]` contribute zero.
    pub fn mask(&self) -> Option<[f32; 4]> {
        (self.has_mask != 0).then_some(self.mask)
    }
}

/// One face crop: the inverse of the alignment transform, mapping output
/// pixel `(u, v)` to source pixel coordinates (pixel centres at integers, as
/// `cv2.warpAffine` with `WARP_INVERSE_MAP`):
/// `x = m[0]*u + m[1]*v + m[2]`, `y = m[3]*u + m[4]*v + m[5]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceDesc {
    /// Byte offset of the image's first pixel in the packed image buffer.
    pub image_offset: u64,
    pub width: u32,
    pub height: u32,
    pub inverse: [f32; 6],
}

// kernels.cu static_asserts the same sizes on its side.
const _: () = assert!(std::mem::size_of::<CropDesc>() == 56 && std::mem::align_of::<CropDesc>() == 8);
const _: () = assert!(std::mem::size_of::<FaceDesc>() == 40 && std::mem::align_of::<FaceDesc>() == 8);

// SAFETY: both are `repr(C)` structs of integers and floats without padding
// (sizes asserted above), valid for any bit pattern, and declared with the
// same field order and types in kernels.cu.
unsafe impl DeviceRepr for CropDesc {}
unsafe impl DeviceRepr for FaceDesc {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_round_trips() {
        let d = CropDesc::new(0, 4, 3, [0.0, 0.0, 4.0, 3.0], None);
        assert_eq!(d.mask(), None);
        let m = [0.5, 0.0, 3.5, 3.0];
        assert_eq!(CropDesc::new(0, 4, 3, [0.0, -0.5, 4.0, 3.5], Some(m)).mask(), Some(m));
    }
}
