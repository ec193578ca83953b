//! The KIND_CPU path: pixels, crops and embeddings in host memory. Crops every box of every
//! request with `crop_core::crop_all` (spread over the cores), encodes them from host memory
//! and writes host outputs.

use crate::config::BoxEmbedConfig;
use crate::execute::{crop_batch, plan_all, write_host_outputs, Batch, Shared};
use crop_core::{crop_all, CropJob, ImageView};
use std::borrow::Cow;
use std::sync::Arc;
use triton_backend::time::now_ns;
use triton_backend::TritonError;

/// A CPU instance's config and the buffers it reuses across execute calls.
pub struct CpuPath {
    config: Arc<BoxEmbedConfig>,
    crops: Vec<f32>,
    embeddings: Vec<f32>,
}

impl CpuPath {
    pub fn new(config: Arc<BoxEmbedConfig>) -> Self {
        Self { config, crops: Vec::new(), embeddings: Vec::new() }
    }

    pub fn run(&mut self, shared: &mut Shared, batch: &mut Batch<'_>) {
        let config = self.config.clone();
        let mut planned = plan_all(batch, &config, |buffer, _| {
            Err(TritonError::internal(format!(
                "an input is in GPU memory (device {}); a KIND_CPU instance reads host memory",
                buffer.memory_type_id
            )))
        });
        let pixels: Vec<Option<Cow<'_, [u8]>>> = planned
            .iter_mut()
            .zip(batch.errors.iter_mut())
            .map(|(slot, error)| {
                let read = slot.as_ref()?.original.host_bytes();
                read.map_err(|e| {
                    *error = Some(e.context("reading inputs"));
                    *slot = None;
                })
                .ok()
            })
            .collect();

        // Planning checked each image's size; a view that still fails fails its request.
        let images: Vec<Option<ImageView<'_>>> = planned
            .iter_mut()
            .zip(&pixels)
            .zip(batch.errors.iter_mut())
            .map(|((slot, bytes), error)| {
                let plan = &slot.as_ref()?.plan;
                ImageView::new(bytes.as_deref()?, plan.width, plan.height)
                    .map_err(|e| {
                        *error = Some(TritonError::invalid_arg(format!("input 'original': {e}")));
                        *slot = None;
                    })
                    .ok()
            })
            .collect();

        batch.compute_start_ns = now_ns();
        let crops = crop_batch(&planned);
        let dim = config.encoder.embedding_dim;
        if !crops.is_empty() {
            match shared.encoder() {
                Ok(encoder) => {
                    let jobs: Vec<CropJob<'_>> = crops
                        .crops
                        .iter()
                        .filter_map(|&(request, region)| Some(CropJob { image: images[request]?, region }))
                        .collect();
                    self.crops.resize(crops.len() * config.roi_align.crop_len(), 0.0);
                    self.embeddings.resize(crops.len() * dim, 0.0);
                    crop_all(&config.roi_align, &jobs, &mut self.crops);
                    for (rows, e) in encoder.embed_host(&self.crops, crops.len(), &mut self.embeddings) {
                        crops.fail(rows, &e, &mut batch.errors);
                    }
                }
                Err(e) => crops.fail(0..crops.len(), &e, &mut batch.errors),
            }
        }
        batch.compute_end_ns = now_ns();

        let requests = planned.iter().zip(batch.responses.iter_mut()).zip(batch.errors.iter_mut()).enumerate();
        for (index, ((planned, response), error)) in requests {
            let (Some(p), Some(response), None) = (planned, response.as_mut(), error.as_ref()) else { continue };
            if let Err(e) = write_host_outputs(response, &crops, index, &p.plan, &self.embeddings, dim) {
                *error = Some(e);
            }
        }
    }
}
