//! The compute-and-scatter loop of the KIND_CPU paths (box mode's [`crate::box_cpu`] and face
//! mode's [`crate::face_cpu`]), in host memory: fill every crop of the batch, embed them in
//! chunks, fail the requests of a failed chunk, write each answered request's outputs. The
//! paths differ only in how they fill a crop and which outputs they write.

use crate::crop_batch::CropBatch;
use crate::encoder::EncoderHandle;
use std::sync::Arc;
use triton_backend::responder::Responder;
use triton_backend::response::Response;
use triton_backend::TritonError;

/// The host buffers one instance reuses across execute calls.
#[derive(Default)]
pub struct HostEncode {
    /// `[N, item_len]` FP32, the encoder's input. Shared with the encoder requests; one given
    /// up at its deadline keeps its buffer, and the next batch fills a new one.
    items: Arc<Vec<f32>>,
    /// `[N, D]` FP32.
    embeddings: Vec<f32>,
}

impl HostEncode {
    /// Runs the batch: `fill` writes every crop of `batch` (`item_len` floats each, in crop
    /// order) into the encoder's input, the encoder embeds them (`dim` floats each), and
    /// `write` writes the outputs of every request still to be answered from all embeddings.
    pub fn run<T: Copy>(
        &mut self,
        encoder: &mut EncoderHandle,
        responder: &mut Responder<'_>,
        batch: &CropBatch<T>,
        (item_len, dim): (usize, usize),
        fill: impl FnOnce(&mut [f32]),
        mut write: impl FnMut(usize, &mut Response, &[f32]) -> Result<(), TritonError>,
    ) {
        responder.start_compute();
        if !batch.is_empty() {
            match encoder.encoder() {
                Ok(mut encoder) => {
                    if Arc::get_mut(&mut self.items).is_none() {
                        self.items = Arc::default();
                    }
                    let items = Arc::get_mut(&mut self.items).expect("a new buffer is not shared");
                    items.resize(batch.len() * item_len, 0.0);
                    self.embeddings.resize(batch.len() * dim, 0.0);
                    fill(items);
                    for (rows, e) in encoder.embed_host(&self.items, batch.len(), &mut self.embeddings) {
                        batch.fail(rows, &e, responder.errors_mut());
                    }
                }
                Err(e) => batch.fail(0..batch.len(), &e, responder.errors_mut()),
            }
        }
        responder.end_compute();
        for (index, response, error) in responder.pending() {
            if let Err(e) = write(index, response, &self.embeddings) {
                *error = Some(e);
            }
        }
    }
}
