//! One execute call, always in the same order: create responses -> gather inputs and plan
//! crops -> crop all boxes of all requests -> encode in chunks -> scatter outputs -> send ->
//! report statistics -> release requests. A request's error goes on its own response; the
//! other requests of the batch carry on.
//!
//! This module holds the order and what every path shares (instance state, the encoder link,
//! reading and planning the small inputs, writing host outputs); [`crate::cpu`] and
//! [`crate::gpu`] gather pixels, crop, encode and scatter where their memory is, and
//! [`crate::faces`] does the same for the face mode.

use crate::config::{
    BoxEmbedConfig, EncoderLink, FaceAlignConfig, INPUT_IMAGE_SIZE, OUTPUT_BOXES, OUTPUT_EMBEDDINGS, OUTPUT_VALID,
};
use crate::cpu::CpuPath;
use crate::encoder::Encoder;
use crate::faces::FacePath;
use crate::gpu::GpuPath;
use crate::plan::{plan_request, CropBatch, ImageTensor, RawTensor, RequestPlan, RequestTensors};
use std::borrow::Cow;
use std::sync::Arc;
use triton_backend::entry::log;
use triton_backend::infer::{ResponseAllocator, Server};
use triton_backend::model::{ExecTimes, ModelInstance};
use triton_backend::request::{Input, InputBuffer, Request};
use triton_backend::response::Response;
use triton_backend::time::now_ns;
use triton_backend::{sys, DataType, TritonError};

/// Per-instance state: what both paths share, and the path's own buffers and device.
pub struct InstanceState {
    pub shared: Shared,
    pub path: Path,
}

pub enum Path {
    Cpu(CpuPath),
    Gpu(Box<GpuPath>),
    Faces(FacePath),
}

/// The encoder link of one instance.
pub struct Shared {
    pub link: EncoderLink,
    pub server: Server,
    pub allocator: ResponseAllocator,
    /// Resolved on first use, because the encoder may load after this model.
    encoder_batch_limit: Option<usize>,
}

impl InstanceState {
    pub fn cpu(config: Arc<BoxEmbedConfig>, server: Server) -> Result<Self, TritonError> {
        let shared = Shared::new(config.encoder.clone(), server, ResponseAllocator::host()?);
        Ok(Self { shared, path: Path::Cpu(CpuPath::new(config)) })
    }

    /// Opens `device_id`, compiles the crop kernels and creates the stream; fails (and so
    /// fails the instance's load) where there is no usable CUDA device.
    pub fn gpu(config: Arc<BoxEmbedConfig>, server: Server, device_id: i32) -> Result<Self, TritonError> {
        let (path, allocator) = GpuPath::new(config.clone(), device_id)?;
        let shared = Shared::new(config.encoder.clone(), server, allocator);
        Ok(Self { shared, path: Path::Gpu(Box::new(path)) })
    }

    /// Face mode, host memory throughout.
    pub fn faces(config: Arc<FaceAlignConfig>, server: Server) -> Result<Self, TritonError> {
        let shared = Shared::new(config.encoder.clone(), server, ResponseAllocator::host()?);
        Ok(Self { shared, path: Path::Faces(FacePath::new(config)) })
    }
}

impl Shared {
    fn new(link: EncoderLink, server: Server, allocator: ResponseAllocator) -> Self {
        Self { link, server, allocator, encoder_batch_limit: None }
    }

    /// The encoder, once it is ready and its config agrees with ours.
    pub fn encoder(&mut self) -> Result<Encoder<'_>, TritonError> {
        let batch_limit = self.encoder_batch_limit()?;
        let link = &self.link;
        Ok(Encoder {
            server: self.server,
            allocator: &self.allocator,
            model: &link.model,
            input: &link.input,
            output: &link.output,
            crop_size: link.item_size,
            embedding_dim: link.embedding_dim,
            batch_limit,
        })
    }

    fn encoder_batch_limit(&mut self) -> Result<usize, TritonError> {
        if let Some(limit) = self.encoder_batch_limit {
            return Ok(limit);
        }
        let model = &self.link.model;
        if !self.server.model_is_ready(model).unwrap_or(false) {
            return Err(TritonError::unavailable(format!("encoder model '{model}' is not loaded or not ready")));
        }
        let encoder_config = self.server.model_config(model)?;
        let limit = self.link.batch_limit(&encoder_config).map_err(|e| TritonError::internal(e.to_string()))?;
        self.encoder_batch_limit = Some(limit);
        Ok(limit)
    }
}

/// The requests of one execute call with their responses (None where creation failed) and
/// errors, and the compute timestamps the path records.
pub struct Batch<'r> {
    pub requests: &'r [Request],
    pub responses: Vec<Option<Response>>,
    pub errors: Vec<Option<TritonError>>,
    pub compute_start_ns: u64,
    pub compute_end_ns: u64,
}

/// A request that planned: its image input (pixels still where Triton holds them) and plan.
pub struct Planned<'r> {
    pub original: Input<'r>,
    pub plan: RequestPlan,
}

/// Runs one execute call over `requests`, which it releases before returning.
pub fn execute(instance: ModelInstance, state: &mut InstanceState, requests: Vec<Request>) {
    let exec_start_ns = now_ns();
    let count = requests.len();
    let responses = requests
        .iter()
        .map(|r| {
            Response::new(r)
                .inspect_err(|e| log(sys::TRITONSERVER_LOG_ERROR, &format!("cannot create response: {e}")))
                .ok()
        })
        .collect();
    let mut batch =
        Batch { requests: &requests, responses, errors: vec![None; count], compute_start_ns: 0, compute_end_ns: 0 };

    match &mut state.path {
        Path::Cpu(path) => path.run(&mut state.shared, &mut batch),
        Path::Gpu(path) => path.run(&mut state.shared, &mut batch),
        Path::Faces(path) => path.run(&mut state.shared, &mut batch),
    }
    let exec_end_ns = now_ns();

    let Batch { responses, errors, compute_start_ns, compute_end_ns, .. } = batch;
    let times = ExecTimes { exec_start_ns, compute_start_ns, compute_end_ns, exec_end_ns };
    for ((request, response), error) in requests.iter().zip(responses).zip(errors) {
        let success = error.is_none();
        if let Some(response) = response {
            let outcome = error.map_or(Ok(()), Err);
            if let Err(e) = response.send(outcome) {
                log(sys::TRITONSERVER_LOG_ERROR, &format!("sending response: {e}"));
            }
        }
        if let Err(e) = instance.report_request(request, success, &times) {
            log(sys::TRITONSERVER_LOG_ERROR, &format!("reporting statistics: {e}"));
        }
    }
    if let Err(e) = instance.report_batch(count as u64, &times) {
        log(sys::TRITONSERVER_LOG_ERROR, &format!("reporting batch statistics: {e}"));
    }
    drop(requests);
}

/// Reads every request's small inputs on the host and plans its crops; a request that
/// fails gets its error and `None`. `read_device` copies an input buffer that Triton holds in
/// GPU memory to the host (the CPU path has none and fails such a request).
pub fn plan_all<'r>(
    batch: &mut Batch<'r>,
    config: &BoxEmbedConfig,
    mut read_device: impl FnMut(&InputBuffer<'r>, &mut [u8]) -> Result<(), TritonError>,
) -> Vec<Option<Planned<'r>>> {
    let requests = batch.requests;
    requests
        .iter()
        .zip(batch.errors.iter_mut())
        .map(|(request, error)| plan_one(request, config, &mut read_device).map_err(|e| *error = Some(e)).ok())
        .collect()
}

fn plan_one<'r>(
    request: &'r Request,
    config: &BoxEmbedConfig,
    read_device: &mut impl FnMut(&InputBuffer<'r>, &mut [u8]) -> Result<(), TritonError>,
) -> Result<Planned<'r>, TritonError> {
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
    let tensors = RequestTensors {
        original: ImageTensor { shape: &original.shape, byte_size: original.byte_size },
        det_boxes: RawTensor { shape: &boxes.shape, bytes: &boxes_bytes },
        num_dets: RawTensor { shape: &num_dets.shape, bytes: &num_dets_bytes },
        letterbox: RawTensor { shape: &letterbox.shape, bytes: &letterbox_bytes },
        image_size: image_size.as_ref().map(|(input, bytes)| RawTensor { shape: &input.shape, bytes }),
    };
    let plan = plan_request(&tensors, config).map_err(|e| TritonError::invalid_arg(e.0))?;
    Ok(Planned { original, plan })
}

/// The crops of every request that planned, in request order.
pub fn crop_batch(planned: &[Option<Planned<'_>>]) -> CropBatch {
    CropBatch::new(planned.iter().map(|p| p.as_ref().map(|p| p.plan.rows.as_slice())))
}

/// Writes `box_embeddings` [1, rows, D] and `box_valid` [1, rows] of `request` into host
/// buffers from `embeddings` (every crop of the batch, [N, D], on the host).
pub fn write_host_outputs(
    response: &mut Response,
    batch: &CropBatch,
    request: usize,
    plan: &RequestPlan,
    embeddings: &[f32],
    dim: usize,
) -> Result<(), TritonError> {
    let rows = plan.rows.len();
    let out = response.output_buffer(OUTPUT_EMBEDDINGS, DataType::Fp32, &[1, rows as i64, dim as i64])?;
    write_embedding_rows(out, batch, request, &plan.rows, embeddings, dim);
    write_row_outputs(response, plan)
}

/// Fills a host `[rows, D]` FP32 buffer: run rows from `embeddings`, skipped rows zero.
pub fn write_embedding_rows<T: Copy, E>(
    out: &mut [u8],
    batch: &CropBatch<T>,
    request: usize,
    rows: &[Result<T, E>],
    embeddings: &[f32],
    dim: usize,
) {
    out.fill(0);
    for run in batch.row_runs(request, rows) {
        let src = &embeddings[run.crop * dim..(run.crop + run.len) * dim];
        let dst = &mut out[run.row * dim * 4..(run.row + run.len) * dim * 4];
        for (d, s) in dst.chunks_exact_mut(4).zip(src) {
            d.copy_from_slice(&s.to_le_bytes());
        }
    }
}

/// `box_valid` [1, rows] and `boxes` [1, rows, 4], always in host memory (a few bytes; the
/// client reads them there).
pub fn write_row_outputs(response: &mut Response, plan: &RequestPlan) -> Result<(), TritonError> {
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
