//! [`CropError`]: invalid parameters given to the constructors of this crate.
//!
//! Per-box outcomes are not errors: a rejected box is a
//! [`BoxRejection`](crate::BoxRejection) and rejected landmarks a
//! [`LandmarkRejection`](crate::LandmarkRejection), so that one bad detection
//! never fails a request.

/// A parameter that cannot describe a valid letterbox, policy, image, crop or face alignment.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CropError {
    #[error("invalid letterbox transform (scale {scale}, pad_x {pad_x}, pad_y {pad_y}): scale must be finite and > 0, pads finite")]
    InvalidLetterbox { scale: f32, pad_x: f32, pad_y: f32 },
    #[error("unknown crop policy {0:?}: expected \"stretch\", \"pad\" or \"context\"")]
    UnknownPolicy(String),
    #[error("invalid context scale {0}: must be finite and >= 1")]
    InvalidContextScale(f32),
    #[error("invalid image size {width}x{height}: both sides must be >= 1")]
    EmptyImage { width: usize, height: usize },
    #[error("image buffer holds {len} bytes, but a {width}x{height} RGB image needs {expected}")]
    ImageLength { len: usize, width: usize, height: usize, expected: usize },
    #[error("invalid crop size {0}: must be >= 1 and 3*size*size must fit in memory")]
    InvalidCropSize(usize),
    #[error("invalid sampling ratio {0}: must be >= 1")]
    InvalidSamplingRatio(usize),
    #[error("invalid face template: {0}")]
    InvalidFaceTemplate(String),
    #[error("invalid face alignment parameter {name} = {value}")]
    InvalidFaceParameter { name: &'static str, value: f32 },
}
