//! Crop logic of the `box_embed` backend: letterbox mapping, box validation and
//! clamping, crop policies and bilinear ROI-align (torchvision, `aligned=True`),
//! and for its face mode the 5-landmark similarity alignment and face warp.
//!
//! The crate has no FFI and no I/O so that the Triton backend, the GPU kernel
//! parity tests and the benchmarks all reach the same code. The exact semantics
//! are those of `docs/crop-semantics.md`: [`Letterbox`] maps detector boxes back to the
//! original image, [`plan_crop`] validates a box and applies a [`CropPolicy`] to
//! get a [`CropRegion`], and [`RoiAlign`] samples that region from an
//! [`ImageView`] into an FP32 CHW crop. [`reference::roi_align`] is the plain
//! per-sample implementation the fast path and the GPU kernel are tested
//! against. [`FaceAligner::from_parameters`] reads the face alignment settings from the
//! `face_align` model config's parameters, for the backend and the gateway alike.
//!
//! Layer: pure logic, no workspace dependencies. Imported by `box-embed-backend`, `cuda-kernels`
//! (its parity tests) and the gateway (aligned faces).

mod error;
mod face;
mod face_params;
mod image;
mod letterbox;
mod policy;
pub mod reference;
mod roi_align;

pub use error::CropError;
pub use face::{
    estimate_similarity, face_to_rgb8, warp_all, warp_face_into, FaceAligner, FaceJob, LandmarkRejection, Similarity,
    ARCFACE_TEMPLATE_112,
};
pub use face_params::FaceParameterError;
pub use image::ImageView;
pub use letterbox::Letterbox;
pub use policy::{plan_crop, BoxRejection, CropPolicy, CropRegion};
pub use roi_align::{crop_all, CropJob, RoiAlign};
