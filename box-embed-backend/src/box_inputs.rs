//! Box mode's inputs through the Triton API: reads every request's small tensors on the host
//! and plans its crops ([`crate::box_plan`]), keeping the `original` input where Triton holds
//! it, for the CPU and GPU box paths alike.

use crate::box_plan::{plan_boxes, BoxPlan, BoxTensors};
use crate::config::{BoxEmbedConfig, INPUT_IMAGE_SIZE};
use crate::crop_batch::CropBatch;
use crate::tensors::{ImageTensor, RawTensor};
use std::borrow::Cow;
use triton_backend::request::{Input, InputBuffer, Request};
use triton_backend::responder::Responder;
use triton_backend::TritonError;

/// A request that planned: its image input (pixels still where Triton holds them) and plan.
pub struct PlannedBoxes<'r> {
    pub original: Input<'r>,
    pub plan: BoxPlan,
}

/// Reads every request's small inputs on the host and plans its crops; a request that
/// fails gets its error and `None`. `read_device` copies an input buffer that Triton holds in
/// GPU memory to the host (the CPU path has none and fails such a request).
pub fn plan_all<'r>(
    responder: &mut Responder<'r>,
    config: &BoxEmbedConfig,
    mut read_device: impl FnMut(&InputBuffer<'r>, &mut [u8]) -> Result<(), TritonError>,
) -> Vec<Option<PlannedBoxes<'r>>> {
    let requests = responder.requests();
    requests
        .iter()
        .enumerate()
        .map(|(index, request)| plan_one(request, config, &mut read_device).map_err(|e| responder.fail(index, e)).ok())
        .collect()
}

fn plan_one<'r>(
    request: &'r Request,
    config: &BoxEmbedConfig,
    read_device: &mut impl FnMut(&InputBuffer<'r>, &mut [u8]) -> Result<(), TritonError>,
) -> Result<PlannedBoxes<'r>, TritonError> {
    let mut read = |name: &str| -> Result<(Input<'r>, Cow<'r, [u8]>), TritonError> {
        let input = request.input(name)?;
        let bytes = input.host_bytes_with(&mut *read_device)?;
        Ok((input, bytes))
    };
    let reading = |e: TritonError| e.context("reading inputs");
    let original = request.input("original").map_err(reading)?;
    let (boxes, boxes_bytes) = read("det_boxes").map_err(reading)?;
    let (num_dets, num_dets_bytes) = read("num_dets").map_err(reading)?;
    let (letterbox, letterbox_bytes) = read("letterbox").map_err(reading)?;
    let image_size = match request.has_input(INPUT_IMAGE_SIZE).map_err(reading)? {
        true => Some(read(INPUT_IMAGE_SIZE).map_err(reading)?),
        false => None,
    };
    let tensors = BoxTensors {
        original: ImageTensor { shape: &original.shape, byte_size: original.byte_size },
        det_boxes: RawTensor { shape: &boxes.shape, bytes: &boxes_bytes },
        num_dets: RawTensor { shape: &num_dets.shape, bytes: &num_dets_bytes },
        letterbox: RawTensor { shape: &letterbox.shape, bytes: &letterbox_bytes },
        image_size: image_size.as_ref().map(|(input, bytes)| RawTensor { shape: &input.shape, bytes }),
    };
    let plan = plan_boxes(&tensors, config).map_err(|e| TritonError::invalid_arg(e.0))?;
    Ok(PlannedBoxes { original, plan })
}

/// The crops of every request that planned, in request order.
pub fn crop_batch(planned: &[Option<PlannedBoxes<'_>>]) -> CropBatch {
    CropBatch::new(planned.iter().map(|p| p.as_ref().map(|p| p.plan.rows.as_slice())))
}
