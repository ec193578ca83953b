//! One execute call over a dynamic batch, in the fixed order: create responses -> gather
//! inputs -> compute (every photo of the batch in parallel, rayon) -> scatter outputs ->
//! send -> report statistics -> release requests. A request's error goes on its own
//! response; the other photos of the batch are answered normally. A photo that cannot get
//! its pixels from the process-wide budget in time fails with UNAVAILABLE (overload: the
//! gateway answers 503); every other problem with a photo is INVALID_ARG.

use crate::config::{INPUT_IMAGE, OUTPUT_CLIP, OUTPUT_IMAGE_SIZE, OUTPUT_LETTERBOX, OUTPUT_ORIGINAL, OUTPUT_YOLO};
use crate::PreprocessModel;
use preprocess_core::{PixelBudget, PreprocessError, Preprocessed, Preprocessor, StageSizes};
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use triton_backend::model::ModelInstance;
use triton_backend::request::Request;
use triton_backend::responder::Responder;
use triton_backend::response::Response;
use triton_backend::{DataType, ErrorCode, TritonError};

/// Per-instance state: the stage, configured once at load, and the process-wide budget.
pub struct InstanceState {
    pub preprocessor: Preprocessor,
    pub budget: Arc<PixelBudget>,
    pub budget_wait: Duration,
}

impl InstanceState {
    pub fn new(model: &PreprocessModel) -> Self {
        let config = &model.config;
        Self {
            preprocessor: Preprocessor { sizes: config.sizes, limits: config.limits },
            budget: model.budget.clone(),
            budget_wait: config.decode_budget_wait,
        }
    }
}

fn request_error(error: PreprocessError) -> TritonError {
    let code = if error.is_overload() { ErrorCode::Unavailable } else { ErrorCode::InvalidArg };
    TritonError::new(code, format!("input '{INPUT_IMAGE}': {error}"))
}

/// Runs one execute call over `requests`, which it releases before returning.
pub fn execute(instance: ModelInstance, state: &InstanceState, requests: Vec<Request>) {
    // Created after `requests`, so dropped (answering what is unanswered) before they are
    // released, also on a panic.
    let mut responder = Responder::new(instance, "preprocess", &requests);
    let inputs: Vec<Result<Cow<'_, [u8]>, TritonError>> = requests.iter().map(encoded_image).collect();
    responder.start_compute();
    let results: Vec<Result<Preprocessed, TritonError>> = inputs
        .into_par_iter()
        .map(|input| {
            let bytes = input?;
            state.preprocessor.run(&bytes, &state.budget, state.budget_wait).map_err(request_error)
        })
        .collect();
    responder.end_compute();

    for (index, result) in results.iter().enumerate() {
        if let Err(e) = result {
            responder.fail(index, e.clone());
        }
    }
    for (index, response, error) in responder.pending() {
        let Ok(out) = &results[index] else { continue };
        if let Err(e) = write_outputs(response, out, &state.preprocessor.sizes) {
            *error = Some(e);
        }
    }
    responder.finish();
}

/// The request's encoded photo: UINT8, one photo per request (batch dimension 1).
fn encoded_image(request: &Request) -> Result<Cow<'_, [u8]>, TritonError> {
    let input = request.input(INPUT_IMAGE)?;
    if input.datatype != DataType::Uint8 {
        return Err(TritonError::invalid_arg(format!("input '{INPUT_IMAGE}' must be UINT8, got {:?}", input.datatype)));
    }
    if input.shape.first().is_some_and(|&batch| batch != 1) {
        return Err(TritonError::invalid_arg(format!(
            "input '{INPUT_IMAGE}' has shape {:?}: one photo per request (batch dimension 1)",
            input.shape
        )));
    }
    input.host_bytes()
}

/// Creates the five outputs (each with the batch dimension of 1) and fills them.
fn write_outputs(response: &mut Response, out: &Preprocessed, sizes: &StageSizes) -> Result<(), TritonError> {
    let (yolo, clip) = (i64::from(sizes.yolo_size), i64::from(sizes.clip_size));
    write_f32(response.output_buffer(OUTPUT_YOLO, DataType::Fp32, &[1, 3, yolo, yolo])?, &out.yolo_input);
    write_f32(response.output_buffer(OUTPUT_CLIP, DataType::Fp32, &[1, 3, clip, clip])?, &out.clip_input);
    let original = &out.original;
    let shape = [1, i64::from(original.height), i64::from(original.width), 3];
    response.output_buffer(OUTPUT_ORIGINAL, DataType::Uint8, &shape)?.copy_from_slice(&original.pixels);
    write_f32(response.output_buffer(OUTPUT_LETTERBOX, DataType::Fp32, &[1, 3])?, &out.letterbox);
    let size = response.output_buffer(OUTPUT_IMAGE_SIZE, DataType::Int32, &[1, 2])?;
    for (dst, value) in size.chunks_exact_mut(4).zip(out.image_size) {
        dst.copy_from_slice(&value.to_le_bytes());
    }
    Ok(())
}

/// Triton tensors are little-endian host memory, as is every platform Triton runs on.
fn write_f32(dst: &mut [u8], values: &[f32]) {
    for (d, v) in dst.chunks_exact_mut(4).zip(values) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}
