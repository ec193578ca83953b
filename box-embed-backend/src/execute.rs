//! One execute call, always in the same order: create responses -> gather inputs and plan
//! crops -> crop all boxes of all requests -> encode in chunks -> scatter outputs -> send ->
//! report statistics -> release requests. A request's error goes on its own response; the
//! other requests of the batch carry on.

use crate::config::{BoxEmbedConfig, OUTPUT_EMBEDDINGS, OUTPUT_VALID};
use crate::encoder::Encoder;
use crate::plan::{plan_request, RawTensor, RequestPlan, RequestTensors};
use crop_core::{crop_all, CropJob};
use std::borrow::Cow;
use triton_backend::entry::log;
use triton_backend::infer::{ResponseAllocator, Server};
use triton_backend::model::{ExecTimes, ModelInstance};
use triton_backend::request::{Input, Request};
use triton_backend::response::Response;
use triton_backend::time::now_ns;
use triton_backend::{sys, DataType, TritonError};

/// Per-instance state: the encoder link and buffers reused across execute calls.
pub struct InstanceState {
    pub config: std::sync::Arc<BoxEmbedConfig>,
    pub server: Server,
    pub allocator: ResponseAllocator,
    /// Resolved on first use, because the encoder may load after this model.
    pub encoder_batch_limit: Option<usize>,
    crops: Vec<f32>,
    embeddings: Vec<f32>,
}

impl InstanceState {
    pub fn new(config: std::sync::Arc<BoxEmbedConfig>, server: Server) -> Result<Self, TritonError> {
        Ok(Self {
            config,
            server,
            allocator: ResponseAllocator::host()?,
            encoder_batch_limit: None,
            crops: Vec::new(),
            embeddings: Vec::new(),
        })
    }

    fn encoder_batch_limit(&mut self) -> Result<usize, TritonError> {
        if let Some(limit) = self.encoder_batch_limit {
            return Ok(limit);
        }
        let model = &self.config.encoder_model;
        if !self.server.model_is_ready(model).unwrap_or(false) {
            return Err(TritonError::unavailable(format!("encoder model '{model}' is not loaded or not ready")));
        }
        let encoder_config = self.server.model_config(model)?;
        let limit = self
            .config
            .encoder_batch_limit(&encoder_config)
            .map_err(|e| TritonError::internal(e.to_string()))?;
        self.encoder_batch_limit = Some(limit);
        Ok(limit)
    }
}

/// The four inputs of one request, as host bytes borrowed from (or gathered out of) Triton.
struct Inputs<'r> {
    tensors: [(Input<'r>, Cow<'r, [u8]>); 4],
}

fn read_inputs(request: &Request) -> Result<Inputs<'_>, TritonError> {
    let read = |name: &str| -> Result<(Input<'_>, Cow<'_, [u8]>), TritonError> {
        let input = request.input(name)?;
        let bytes = input.host_bytes()?;
        Ok((input, bytes))
    };
    Ok(Inputs { tensors: [read("original")?, read("det_boxes")?, read("num_dets")?, read("letterbox")?] })
}

impl<'r> Inputs<'r> {
    fn tensors(&self) -> RequestTensors<'_> {
        let raw = |i: usize| RawTensor { shape: &self.tensors[i].0.shape, bytes: &self.tensors[i].1 };
        RequestTensors { original: raw(0), det_boxes: raw(1), num_dets: raw(2), letterbox: raw(3) }
    }
}

/// Runs one execute call over `requests`, which it releases before returning.
pub fn execute(instance: ModelInstance, state: &mut InstanceState, requests: Vec<Request>) {
    let exec_start_ns = now_ns();
    let config = state.config.clone();
    let count = requests.len();

    let mut responses: Vec<Option<Response>> = requests
        .iter()
        .map(|r| Response::new(r).inspect_err(|e| log(sys::TRITONSERVER_LOG_ERROR, &format!("cannot create response: {e}"))).ok())
        .collect();
    let mut errors: Vec<Option<TritonError>> = vec![None; count];

    let inputs: Vec<Option<Inputs<'_>>> = requests
        .iter()
        .zip(errors.iter_mut())
        .map(|(r, err)| read_inputs(r).map_err(|e| *err = Some(e.context("reading inputs"))).ok())
        .collect();
    let plans: Vec<Option<RequestPlan<'_>>> = inputs
        .iter()
        .zip(errors.iter_mut())
        .map(|(inputs, err)| {
            let inputs = inputs.as_ref()?;
            plan_request(&inputs.tensors(), &config)
                .map_err(|e| *err = Some(TritonError::invalid_arg(e.0)))
                .ok()
        })
        .collect();

    let compute_start_ns = now_ns();
    // Crop jobs of every request, in request order; `owners[j]` is the request of job j.
    let mut jobs = Vec::new();
    let mut owners = Vec::new();
    for (index, plan) in plans.iter().enumerate() {
        let Some(plan) = plan else { continue };
        for region in plan.rows.iter().flatten() {
            jobs.push(CropJob { image: plan.image, region: *region });
            owners.push(index);
        }
    }
    let dim = config.embedding_dim;
    if !jobs.is_empty() {
        match state.encoder_batch_limit() {
            Ok(batch_limit) => {
                let crop_len = config.roi_align.crop_len();
                state.crops.resize(jobs.len() * crop_len, 0.0);
                state.embeddings.resize(jobs.len() * dim, 0.0);
                crop_all(&config.roi_align, &jobs, &mut state.crops);
                let encoder = Encoder {
                    server: state.server,
                    allocator: &state.allocator,
                    model: &config.encoder_model,
                    input: &config.encoder_input,
                    output: &config.encoder_output,
                    crop_size: config.roi_align.crop_size,
                    embedding_dim: dim,
                    batch_limit,
                };
                for chunk in encoder.encode(&state.crops, &mut state.embeddings) {
                    if let Err(e) = chunk.result {
                        for &owner in &owners[chunk.start..chunk.end] {
                            errors[owner].get_or_insert_with(|| e.clone());
                        }
                    }
                }
            }
            Err(e) => {
                for &owner in &owners {
                    errors[owner].get_or_insert_with(|| e.clone());
                }
            }
        }
    }
    let compute_end_ns = now_ns();

    // Scatter: each request's valid rows take the next embeddings of its jobs, in order.
    let mut next_job = 0;
    for (index, plan) in plans.iter().enumerate() {
        let Some(plan) = plan else { continue };
        let first_job = next_job;
        next_job += plan.valid_rows();
        if errors[index].is_some() {
            continue;
        }
        let Some(response) = responses[index].as_mut() else { continue };
        let embeddings = &state.embeddings[first_job * dim..next_job * dim];
        if let Err(e) = write_outputs(response, plan, embeddings, dim) {
            errors[index] = Some(e);
        }
    }
    let exec_end_ns = now_ns();

    let times = ExecTimes { exec_start_ns, compute_start_ns, compute_end_ns, exec_end_ns };
    drop(plans);
    drop(inputs);
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

/// Writes `box_embeddings` [1, rows, D] and `box_valid` [1, rows]; skipped rows are zero
/// and false, and never shift the rows after them.
fn write_outputs(response: &mut Response, plan: &RequestPlan<'_>, embeddings: &[f32], dim: usize) -> Result<(), TritonError> {
    let rows = plan.rows.len();
    let out = response.output_buffer(OUTPUT_EMBEDDINGS, DataType::Fp32, &[1, rows as i64, dim as i64])?;
    let mut valid_embeddings = embeddings.chunks_exact(dim);
    for (row, dst) in plan.rows.iter().zip(out.chunks_exact_mut(dim * 4)) {
        match (row, valid_embeddings.next_if_ok(row.is_ok())) {
            (Ok(_), Some(src)) => {
                for (d, s) in dst.chunks_exact_mut(4).zip(src) {
                    d.copy_from_slice(&s.to_le_bytes());
                }
            }
            _ => dst.fill(0),
        }
    }
    let valid = response.output_buffer(OUTPUT_VALID, DataType::Bool, &[1, rows as i64])?;
    for (flag, row) in valid.iter_mut().zip(&plan.rows) {
        *flag = row.is_ok() as u8;
    }
    Ok(())
}

/// Takes the next item only for rows that consumed one.
trait NextIfOk<T> {
    fn next_if_ok(&mut self, take: bool) -> Option<T>;
}

impl<T, I: Iterator<Item = T>> NextIfOk<T> for I {
    fn next_if_ok(&mut self, take: bool) -> Option<T> {
        if take {
            self.next()
        } else {
            None
        }
    }
}
