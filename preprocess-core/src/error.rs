//! [`PreprocessError`]: what can be wrong with one request's photo, or why it could not be
//! decoded now. Every variant says what was wrong in words a client can act on; the backend
//! turns them into per-request errors ([`PreprocessError::is_overload`] ones into UNAVAILABLE).

use crate::budget::BudgetError;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreprocessError {
    #[error("the image is empty (0 bytes)")]
    Empty,
    #[error("the image is {bytes} bytes, more than max_image_bytes = {max}")]
    TooManyBytes { bytes: usize, max: usize },
    #[error("not a JPEG, PNG or WebP image (first bytes: {head})")]
    UnknownFormat { head: String },
    #[error("the {format} image is {width}x{height} = {pixels} pixels, more than max_pixels = {max}")]
    TooManyPixels { format: &'static str, width: u32, height: u32, pixels: u64, max: u64 },
    #[error("the {format} image has a zero side ({width}x{height})")]
    ZeroSize { format: &'static str, width: u32, height: u32 },
    #[error("cannot decode the {format} image: {reason}")]
    Decode { format: &'static str, reason: String },
    #[error("the {format} image is truncated: {reason}")]
    Truncated { format: &'static str, reason: String },
    #[error("resampling failed: {0}")]
    Resample(String),
    #[error(transparent)]
    Budget(#[from] BudgetError),
}

impl PreprocessError {
    /// Whether the photo is fine and the server was too busy to decode it in time.
    pub fn is_overload(&self) -> bool {
        matches!(self, Self::Budget(BudgetError::Overloaded { .. }))
    }
}
