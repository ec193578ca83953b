//! Sends crops to the image encoder model in-process, in chunks no larger than its batch
//! limit, and writes the embeddings back in crop order.

use triton_backend::infer::{InferenceRequest, PendingInference, ResponseAllocator, Server};
use triton_backend::{DataType, TritonError};

/// The encoder as seen from this backend: where to send crops and what comes back.
pub struct Encoder<'a> {
    pub server: Server,
    pub allocator: &'a ResponseAllocator,
    pub model: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    pub crop_size: usize,
    pub embedding_dim: usize,
    pub batch_limit: usize,
}

/// Outcome of one chunk: crops `start..end` were embedded, or failed with `result`'s error.
pub struct ChunkOutcome {
    pub start: usize,
    pub end: usize,
    pub result: Result<(), TritonError>,
}

impl Encoder<'_> {
    /// Embeds `crops` ([n, 3, S, S]) into `embeddings` ([n, D]). Every chunk is sent before
    /// any is waited on, so the encoder's dynamic batcher and instances work in parallel.
    pub fn encode(&self, crops: &[f32], embeddings: &mut [f32]) -> Vec<ChunkOutcome> {
        let crop_len = 3 * self.crop_size * self.crop_size;
        let count = crops.len() / crop_len;
        let bounds: Vec<(usize, usize)> = (0..count)
            .step_by(self.batch_limit)
            .map(|start| (start, (start + self.batch_limit).min(count)))
            .collect();
        let pending: Vec<Result<PendingInference<'_>, TritonError>> = bounds
            .iter()
            .map(|&(start, end)| self.send(&crops[start * crop_len..end * crop_len], end - start))
            .collect();
        bounds
            .into_iter()
            .zip(pending)
            .map(|((start, end), sent)| {
                let result = sent.and_then(|p| p.wait()).and_then(|response| {
                    let out = &mut embeddings[start * self.embedding_dim..end * self.embedding_dim];
                    self.copy_embeddings(&response, end - start, out)
                });
                let result = result.map_err(|e| e.context(format!("encoder '{}'", self.model)));
                ChunkOutcome { start, end, result }
            })
            .collect()
    }

    fn send<'c>(&'c self, crops: &'c [f32], count: usize) -> Result<PendingInference<'c>, TritonError> {
        let mut request = InferenceRequest::new(&self.server, self.model)?;
        let s = self.crop_size as i64;
        // SAFETY of the cast: f32 has no padding and any byte view of it is valid.
        let bytes = unsafe { std::slice::from_raw_parts(crops.as_ptr() as *const u8, std::mem::size_of_val(crops)) };
        request.add_host_input(self.input, DataType::Fp32, &[count as i64, 3, s, s], bytes)?;
        request.add_requested_output(self.output)?;
        self.server.infer_async(request, self.allocator)
    }

    fn copy_embeddings(
        &self,
        response: &triton_backend::infer::InferenceResponse,
        count: usize,
        out: &mut [f32],
    ) -> Result<(), TritonError> {
        let output = response.output(self.output)?;
        let expected = [count as i64, self.embedding_dim as i64];
        if output.datatype != DataType::Fp32 || output.shape != expected {
            return Err(TritonError::internal(format!(
                "output '{}' is {:?} {:?}, expected FP32 {expected:?}",
                self.output, output.datatype, output.shape
            )));
        }
        let bytes = output
            .host_bytes()
            .ok_or_else(|| TritonError::internal(format!("output '{}' is not in host memory", self.output)))?;
        if bytes.len() != out.len() * 4 {
            return Err(TritonError::internal(format!("output '{}' holds {} bytes", self.output, bytes.len())));
        }
        for (dst, src) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        }
        Ok(())
    }
}
