//! The encoder model as this backend calls it in-process: [`EncoderHandle`], an instance's
//! link to it (resolved once the encoder is ready), and [`Encoder`], which sends crops in
//! chunks no larger than its batch limit, from host or device memory, and checks what comes
//! back. The host paths copy the embeddings out with [`Encoder::embed_host`]; the device path
//! into a device buffer itself.
//!
//! Every call is bounded by the link's timeout (`encoder_timeout_ms`): a chunk the encoder
//! has not answered by then fails its crops with an error naming the timeout, and the handle
//! keeps the unfinished inference (which owns its crops) until Triton is done with it, so a
//! hung encoder delays an instance by the timeout at most, never forever.

use crate::config::EncoderLink;
use std::ffi::c_void;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};
use triton_backend::infer::{
    InferenceRequest, InferenceResponse, InputOwner, PendingInference, ResponseAllocator, ResponseOutput, Server,
    Waited,
};
use triton_backend::{DataType, MemoryType, TritonError};

/// One instance's link to its encoder: the config's side of the contract, the server and the
/// response allocator for the encoder's outputs.
pub struct EncoderHandle {
    link: EncoderLink,
    server: Server,
    allocator: Arc<ResponseAllocator>,
    /// Resolved on first use, because the encoder may load after this model.
    batch_limit: Option<usize>,
    /// Inferences given up at their deadline and not finished yet; dropping one waits, so the
    /// instance outlives them.
    overdue: Vec<PendingInference>,
}

impl EncoderHandle {
    pub fn new(link: EncoderLink, server: Server, allocator: ResponseAllocator) -> Self {
        Self { link, server, allocator: Arc::new(allocator), batch_limit: None, overdue: Vec::new() }
    }

    /// The encoder, once it is ready and its config agrees with ours.
    pub fn encoder(&mut self) -> Result<Encoder<'_>, TritonError> {
        let batch_limit = self.batch_limit()?;
        self.overdue.retain(|pending| !pending.is_finished());
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
            timeout: link.timeout,
            overdue: &mut self.overdue,
        })
    }

    fn batch_limit(&mut self) -> Result<usize, TritonError> {
        if let Some(limit) = self.batch_limit {
            return Ok(limit);
        }
        let model = &self.link.model;
        if !self.server.model_is_ready(model).unwrap_or(false) {
            return Err(TritonError::unavailable(format!("encoder model '{model}' is not loaded or not ready")));
        }
        let encoder_config = self.server.model_config(model)?;
        let limit = self.link.batch_limit(&encoder_config).map_err(|e| TritonError::internal(e.to_string()))?;
        self.batch_limit = Some(limit);
        Ok(limit)
    }
}

/// The encoder as seen from this backend: where to send crops and what comes back.
pub struct Encoder<'a> {
    pub server: Server,
    pub allocator: &'a Arc<ResponseAllocator>,
    pub model: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    pub crop_size: usize,
    pub embedding_dim: usize,
    pub batch_limit: usize,
    /// How long one call may wait for the encoder.
    pub timeout: Duration,
    overdue: &'a mut Vec<PendingInference>,
}

/// Where the crops `[n, 3, S, S]` FP32 are; each in-process request shares their owner.
pub enum Crops {
    Host(Arc<Vec<f32>>),
    /// Built by [`Crops::device`].
    Device {
        ptr: u64,
        device_id: i64,
        owner: InputOwner,
    },
}

impl Crops {
    /// # Safety
    /// `ptr` is a device address on `device_id` holding every crop sent from it, which
    /// `owner` keeps valid, and nobody writes that memory while any request holds `owner`.
    pub unsafe fn device(ptr: u64, device_id: i64, owner: InputOwner) -> Self {
        Self::Device { ptr, device_id, owner }
    }
}

/// The error of a chunk the encoder did not answer in time (the caller names the encoder).
pub fn timeout_error(timeout: Duration) -> TritonError {
    TritonError::unavailable(format!(
        "did not answer within {} ms (the encoder_timeout_ms parameter): it is overloaded or \
         hung; the crops of this request were not embedded",
        timeout.as_millis()
    ))
}

/// Outcome of one chunk: crops `crops` were embedded into `result`'s response, or failed.
pub struct Chunk {
    pub crops: Range<usize>,
    pub result: Result<InferenceResponse, TritonError>,
}

impl Encoder<'_> {
    /// Embeds `count` crops from `crops`. Every chunk is sent before any is waited on, so the
    /// encoder's dynamic batcher and instances work in parallel. Each chunk either completed
    /// or failed when this returns, at the latest `timeout` after the sending; an unfinished
    /// one keeps a share of `crops` until Triton releases it.
    pub fn infer(&mut self, crops: &Crops, count: usize) -> Vec<Chunk> {
        let bounds: Vec<Range<usize>> =
            (0..count).step_by(self.batch_limit).map(|start| start..(start + self.batch_limit).min(count)).collect();
        let deadline = Instant::now() + self.timeout;
        let pending: Vec<Result<PendingInference, TritonError>> =
            bounds.iter().map(|range| self.send(crops, range.clone())).collect();
        bounds
            .into_iter()
            .zip(pending)
            .map(|(range, sent)| {
                let result = sent
                    .and_then(|p| match p.wait_until(deadline) {
                        Waited::Done(result) => result,
                        Waited::Running(p) => {
                            self.overdue.push(p);
                            Err(timeout_error(self.timeout))
                        }
                    })
                    .map_err(|e| e.context(format!("encoder '{}'", self.model)));
                Chunk { crops: range, result }
            })
            .collect()
    }

    /// Embeds `count` crops held in host memory into `embeddings` (`[count, D]`), and returns
    /// the crop ranges whose chunk failed, each with its error; their rows are left as they were.
    pub fn embed_host(
        &mut self,
        crops: &Arc<Vec<f32>>,
        count: usize,
        embeddings: &mut [f32],
    ) -> Vec<(Range<usize>, TritonError)> {
        let dim = self.embedding_dim;
        let mut failed = Vec::new();
        for chunk in self.infer(&Crops::Host(crops.clone()), count) {
            let out = &mut embeddings[chunk.crops.start * dim..chunk.crops.end * dim];
            let copied = chunk.result.and_then(|response| {
                let output = self.embeddings(&response, chunk.crops.len())?;
                let bytes = output.host_bytes().ok_or_else(|| {
                    TritonError::internal(format!("encoder output '{}' is not in host memory", self.output))
                })?;
                for (dst, src) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                }
                Ok(())
            });
            if let Err(e) = copied {
                failed.push((chunk.crops, e));
            }
        }
        failed
    }

    fn send(&self, crops: &Crops, range: Range<usize>) -> Result<PendingInference, TritonError> {
        let mut request = InferenceRequest::new(&self.server, self.model)?;
        // Still queued at our deadline: the encoder's scheduler drops it (where its queue
        // policy allows the override), so a backlog does not grow with requests nobody awaits.
        request.set_timeout(self.timeout)?;
        let s = self.crop_size as i64;
        let crop_len = 3 * self.crop_size * self.crop_size;
        let shape = [range.len() as i64, 3, s, s];
        match crops {
            Crops::Host(all) => {
                request.add_fp32_input(self.input, &shape, all, range.start * crop_len..range.end * crop_len)?;
            }
            Crops::Device { ptr, device_id, owner } => {
                let bytes = crop_len * std::mem::size_of::<f32>();
                // SAFETY: `Crops::device`'s contract: the memory holds every crop and `owner`,
                // which the request keeps, keeps it valid and unwritten.
                unsafe {
                    let chunk = (ptr + (range.start * bytes) as u64) as *const c_void;
                    request.add_input(
                        self.input,
                        DataType::Fp32,
                        &shape,
                        chunk,
                        range.len() * bytes,
                        MemoryType::Gpu,
                        *device_id,
                        owner.clone(),
                    )?;
                }
            }
        }
        request.add_requested_output(self.output)?;
        self.server.infer_async(request, self.allocator)
    }

    /// The embeddings `[count, D]` FP32 of one chunk's response, checked against the contract.
    pub fn embeddings<'r>(
        &self,
        response: &'r InferenceResponse,
        count: usize,
    ) -> Result<ResponseOutput<'r>, TritonError> {
        let output = response.output(self.output)?;
        let expected = [count as i64, self.embedding_dim as i64];
        if output.datatype != DataType::Fp32 || output.shape != expected {
            return Err(TritonError::internal(format!(
                "encoder '{}' output '{}' is {:?} {:?}, expected FP32 {expected:?}",
                self.model, self.output, output.datatype, output.shape
            )));
        }
        if output.byte_size != count * self.embedding_dim * 4 {
            return Err(TritonError::internal(format!(
                "encoder '{}' output '{}' holds {} bytes",
                self.model, self.output, output.byte_size
            )));
        }
        Ok(output)
    }
}
