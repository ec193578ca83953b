//! Box mode on KIND_CPU instances: pixels, crops and embeddings in host memory. Crops every
//! box of every request with `crop_core::crop_all` (spread over the cores) inside the shared
//! host encode loop ([`crate::host_encode`]) and writes host outputs.

use crate::box_inputs::{crop_batch, plan_all};
use crate::box_outputs::write_host_outputs;
use crate::config::BoxEmbedConfig;
use crate::encoder::EncoderHandle;
use crate::host_encode::HostEncode;
use crop_core::{crop_all, CropJob, ImageView};
use std::borrow::Cow;
use std::sync::Arc;
use triton_backend::responder::Responder;
use triton_backend::TritonError;

/// A box-mode CPU instance's config and the buffers it reuses across execute calls.
pub struct BoxCpuPath {
    config: Arc<BoxEmbedConfig>,
    host: HostEncode,
}

impl BoxCpuPath {
    pub fn new(config: Arc<BoxEmbedConfig>) -> Self {
        Self { config, host: HostEncode::default() }
    }

    pub fn run(&mut self, encoder: &mut EncoderHandle, responder: &mut Responder<'_>) {
        let config = self.config.clone();
        let mut planned = plan_all(responder, &config, |buffer, _| {
            Err(TritonError::internal(format!(
                "an input is in GPU memory (device {}); a KIND_CPU instance reads host memory",
                buffer.memory_type_id
            )))
        });
        let pixels: Vec<Option<Cow<'_, [u8]>>> = planned
            .iter_mut()
            .enumerate()
            .map(|(index, slot)| {
                let read = slot.as_ref()?.original.host_bytes();
                read.map_err(|e| {
                    responder.fail(index, e.context("reading inputs"));
                    *slot = None;
                })
                .ok()
            })
            .collect();

        // Planning checked each image's size; a view that still fails fails its request.
        let images: Vec<Option<ImageView<'_>>> = planned
            .iter_mut()
            .zip(&pixels)
            .enumerate()
            .map(|(index, (slot, bytes))| {
                let plan = &slot.as_ref()?.plan;
                ImageView::new(bytes.as_deref()?, plan.width, plan.height)
                    .map_err(|e| {
                        responder.fail(index, TritonError::invalid_arg(format!("input 'original': {e}")));
                        *slot = None;
                    })
                    .ok()
            })
            .collect();

        let crops = crop_batch(&planned);
        let sizes = (config.roi_align.crop_len(), config.encoder.embedding_dim);
        let fill = |out: &mut [f32]| {
            let jobs: Vec<CropJob<'_>> = crops
                .crops
                .iter()
                .filter_map(|&(request, region)| Some(CropJob { image: images[request]?, region }))
                .collect();
            crop_all(&config.roi_align, &jobs, out);
        };
        let write = |index: usize, response: &mut _, embeddings: &[f32]| {
            let Some(p) = &planned[index] else { return Ok(()) };
            write_host_outputs(response, &crops, index, &p.plan, embeddings, sizes.1)
        };
        self.host.run(encoder, responder, &crops, sizes, fill, write);
    }
}
