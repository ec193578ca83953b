//! The face mode (`mode: faces`), KIND_CPU instances: per execute, plan every request's
//! faces ([`crate::face_plan`]), warp every valid face of every request to the aligned,
//! normalised square (`crop_core::warp_all`, spread over the cores), embed them with the face
//! encoder in chunks ([`crate::encoder`]), and scatter the embeddings back to their rows:
//! `face_embeddings` [num_faces, D] and `face_valid` [num_faces]. A face whose landmarks were
//! rejected gets a zero row and `face_valid` false; the other rows do not move.

use crate::config::{FaceAlignConfig, INPUT_LANDMARKS, INPUT_NUM_FACES, OUTPUT_FACE_EMBEDDINGS, OUTPUT_FACE_VALID};
use crate::execute::{write_embedding_rows, Batch, Shared};
use crate::face_plan::{plan_faces, FacePlan, FaceTensors};
use crate::plan::{CropBatch, ImageTensor, RawTensor};
use crop_core::{warp_all, FaceJob, ImageView};
use std::borrow::Cow;
use std::sync::Arc;
use triton_backend::request::Request;
use triton_backend::response::Response;
use triton_backend::time::now_ns;
use triton_backend::{DataType, TritonError};

/// A face-mode instance's config and the buffers it reuses across execute calls.
pub struct FacePath {
    config: Arc<FaceAlignConfig>,
    faces: Vec<f32>,
    embeddings: Vec<f32>,
}

/// A request that planned: its pixels (host memory) and its face plan.
struct PlannedFaces<'r> {
    pixels: Cow<'r, [u8]>,
    plan: FacePlan,
}

fn plan_request<'r>(request: &'r Request, config: &FaceAlignConfig) -> Result<PlannedFaces<'r>, TritonError> {
    let reading = |e: TritonError| e.context("reading inputs");
    let original = request.input("original").map_err(reading)?;
    let num_faces = request.input(INPUT_NUM_FACES).map_err(reading)?;
    let landmarks = request.input(INPUT_LANDMARKS).map_err(reading)?;
    let (num_faces_bytes, landmark_bytes) =
        (num_faces.host_bytes().map_err(reading)?, landmarks.host_bytes().map_err(reading)?);
    let tensors = FaceTensors {
        original: ImageTensor { shape: &original.shape, byte_size: original.byte_size },
        num_faces: RawTensor { shape: &num_faces.shape, bytes: &num_faces_bytes },
        landmarks: RawTensor { shape: &landmarks.shape, bytes: &landmark_bytes },
    };
    let plan = plan_faces(&tensors, config).map_err(|e| TritonError::invalid_arg(e.0))?;
    let pixels = original.host_bytes().map_err(reading)?;
    ImageView::new(&pixels, plan.width, plan.height)
        .map_err(|e| TritonError::invalid_arg(format!("input 'original': {e}")))?;
    Ok(PlannedFaces { pixels, plan })
}

fn write_outputs(
    response: &mut Response,
    batch: &CropBatch<[f32; 6]>,
    request: usize,
    plan: &FacePlan,
    embeddings: &[f32],
    dim: usize,
) -> Result<(), TritonError> {
    let rows = plan.rows.len() as i64;
    let out = response.output_buffer(OUTPUT_FACE_EMBEDDINGS, DataType::Fp32, &[1, rows, dim as i64])?;
    write_embedding_rows(out, batch, request, &plan.rows, embeddings, dim);
    let valid = response.output_buffer(OUTPUT_FACE_VALID, DataType::Bool, &[1, rows])?;
    for (flag, row) in valid.iter_mut().zip(&plan.rows) {
        *flag = row.is_ok() as u8;
    }
    Ok(())
}

impl FacePath {
    pub fn new(config: Arc<FaceAlignConfig>) -> Self {
        Self { config, faces: Vec::new(), embeddings: Vec::new() }
    }

    pub fn run(&mut self, shared: &mut Shared, batch: &mut Batch<'_>) {
        let config = self.config.clone();
        let requests = batch.requests;
        let planned: Vec<Option<PlannedFaces<'_>>> = requests
            .iter()
            .zip(batch.errors.iter_mut())
            .map(|(request, error)| plan_request(request, &config).map_err(|e| *error = Some(e)).ok())
            .collect();
        // `plan_request` checked every view, so each face below has its image.
        let images: Vec<Option<ImageView<'_>>> = planned
            .iter()
            .map(|p| p.as_ref().and_then(|p| ImageView::new(&p.pixels, p.plan.width, p.plan.height).ok()))
            .collect();

        batch.compute_start_ns = now_ns();
        let faces = CropBatch::new(planned.iter().map(|p| p.as_ref().map(|p| p.plan.rows.as_slice())));
        let dim = config.encoder.embedding_dim;
        let face_len = config.aligner.face_len();
        if !faces.is_empty() {
            match shared.encoder() {
                Ok(encoder) => {
                    let jobs: Vec<FaceJob<'_>> = faces
                        .crops
                        .iter()
                        .filter_map(|&(request, map)| Some(FaceJob { image: images[request]?, map }))
                        .collect();
                    self.faces.resize(faces.len() * face_len, 0.0);
                    self.embeddings.resize(faces.len() * dim, 0.0);
                    warp_all(&jobs, config.aligner.size, &mut self.faces);
                    for (rows, e) in encoder.embed_host(&self.faces, faces.len(), &mut self.embeddings) {
                        faces.fail(rows, &e, &mut batch.errors);
                    }
                }
                Err(e) => faces.fail(0..faces.len(), &e, &mut batch.errors),
            }
        }
        batch.compute_end_ns = now_ns();

        let outputs = planned.iter().zip(batch.responses.iter_mut()).zip(batch.errors.iter_mut()).enumerate();
        for (index, ((planned, response), error)) in outputs {
            let (Some(p), Some(response), None) = (planned, response.as_mut(), error.as_ref()) else { continue };
            if let Err(e) = write_outputs(response, &faces, index, &p.plan, &self.embeddings, dim) {
                *error = Some(e);
            }
        }
    }
}
