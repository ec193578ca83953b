//! Box mode's outputs in host memory: `box_embeddings` rows from the batch's embeddings, and
//! the per-row `box_valid` and `boxes` that every box path writes on the host.

use crate::box_plan::BoxPlan;
use crate::config::{OUTPUT_BOXES, OUTPUT_EMBEDDINGS, OUTPUT_VALID};
use crate::crop_batch::{write_embedding_rows, CropBatch};
use triton_backend::response::Response;
use triton_backend::{DataType, TritonError};

/// Writes `box_embeddings` [1, rows, D] and `box_valid` [1, rows] of `request` into host
/// buffers from `embeddings` (every crop of the batch, [N, D], on the host).
pub fn write_host_outputs(
    response: &mut Response,
    batch: &CropBatch,
    request: usize,
    plan: &BoxPlan,
    embeddings: &[f32],
    dim: usize,
) -> Result<(), TritonError> {
    let rows = plan.rows.len();
    let out = response.output_buffer(OUTPUT_EMBEDDINGS, DataType::Fp32, &[1, rows as i64, dim as i64])?;
    write_embedding_rows(out, batch, request, &plan.rows, embeddings, dim);
    write_row_outputs(response, plan)
}

/// `box_valid` [1, rows] and `boxes` [1, rows, 4], always in host memory (a few bytes; the
/// client reads them there).
pub fn write_row_outputs(response: &mut Response, plan: &BoxPlan) -> Result<(), TritonError> {
    let rows = plan.rows.len() as i64;
    let valid = response.output_buffer(OUTPUT_VALID, DataType::Bool, &[1, rows])?;
    for (flag, row) in valid.iter_mut().zip(&plan.rows) {
        *flag = row.is_ok() as u8;
    }
    let boxes = response.output_buffer(OUTPUT_BOXES, DataType::Fp32, &[1, rows, 4])?;
    for (dst, value) in boxes.chunks_exact_mut(4).zip(plan.boxes.iter().flatten()) {
        dst.copy_from_slice(&value.to_le_bytes());
    }
    Ok(())
}
