//! The preprocess stage's pixel logic, with no FFI and no I/O: the `preprocess` Triton
//! backend (`preprocess-backend`) calls it per request, and unit tests reach it directly.
//!
//! - [`geometry`]: the size and offset rules (Ultralytics letterbox, torchvision
//!   shorter-side resize and centre crop, the cap on the original), pure integer/float math;
//! - [`decode`]: encoded bytes -> RGB8 pixels, EXIF orientation applied, with size limits;
//! - [`budget`]: the pixel budget concurrent decodes reserve from before decoding;
//! - [`resample`]: the two bilinear resamplers (OpenCV-like for the letterbox, PIL-like
//!   antialiased for CLIP and the original) and the planar FP32 conversion;
//! - [`pipeline`]: one decoded photo -> every output tensor of the stage.
//!
//! The exact contract (and its tolerance against the Python references) is written down in
//! `docs/preprocess.md`.
//!
//! Layer: pure logic, no workspace dependencies. Imported by `preprocess-backend` and the gateway.

pub mod budget;
pub mod decode;
pub mod error;
pub mod geometry;
pub mod pipeline;
pub mod resample;

pub use budget::{BudgetError, PixelBudget};
pub use decode::{decode, decode_admitted, oriented_size, DecodeLimits};
pub use error::PreprocessError;
pub use pipeline::{Preprocessed, Preprocessor, StageSizes};
pub use resample::Rgb8Image;
