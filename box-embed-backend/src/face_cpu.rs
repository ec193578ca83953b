//! Face mode (`mode: faces`, the `face_align` model) on KIND_CPU instances: per execute,
//! plan every request's faces ([`crate::face_plan`]), then in the shared host encode loop
//! ([`crate::host_encode`]) warp every valid face to the aligned, normalised square
//! (`crop_core::warp_all`, spread over the cores), embed them with the face encoder and
//! scatter the embeddings back to their rows: `face_embeddings` [num_faces, D] and
//! `face_valid` [num_faces]. A face whose landmarks were rejected gets a zero row and
//! `face_valid` false; the other rows do not move.

use crate::config::{FaceAlignConfig, INPUT_LANDMARKS, INPUT_NUM_FACES, OUTPUT_FACE_EMBEDDINGS, OUTPUT_FACE_VALID};
use crate::crop_batch::{write_embedding_rows, CropBatch};
use crate::encoder::EncoderHandle;
use crate::face_plan::{plan_faces, FacePlan, FaceTensors};
use crate::host_encode::HostEncode;
use crate::tensors::{ImageTensor, RawTensor};
use crop_core::{warp_all, FaceJob, ImageView};
use std::borrow::Cow;
use std::sync::Arc;
use triton_backend::request::Request;
use triton_backend::responder::Responder;
use triton_backend::response::Response;
use triton_backend::{DataType, TritonError};

/// A face-mode instance's config and the buffers it reuses across execute calls.
pub struct FaceCpuPath {
    config: Arc<FaceAlignConfig>,
    host: HostEncode,
}

/// A request that planned: its pixels (host memory) and its face plan.
struct PlannedFaces<'r> {
    pixels: Cow<'r, [u8]>,
    plan: FacePlan,
}

/// Reads one request's inputs (all in host memory) and plans its faces.
fn read_and_plan_faces<'r>(request: &'r Request, config: &FaceAlignConfig) -> Result<PlannedFaces<'r>, TritonError> {
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

fn write_face_outputs(
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

impl FaceCpuPath {
    pub fn new(config: Arc<FaceAlignConfig>) -> Self {
        Self { config, host: HostEncode::default() }
    }

    pub fn run(&mut self, encoder: &mut EncoderHandle, responder: &mut Responder<'_>) {
        let config = self.config.clone();
        let requests = responder.requests();
        let planned: Vec<Option<PlannedFaces<'_>>> = requests
            .iter()
            .enumerate()
            .map(|(index, request)| read_and_plan_faces(request, &config).map_err(|e| responder.fail(index, e)).ok())
            .collect();
        // `read_and_plan_faces` checked every view, so each face below has its image.
        let images: Vec<Option<ImageView<'_>>> = planned
            .iter()
            .map(|p| p.as_ref().and_then(|p| ImageView::new(&p.pixels, p.plan.width, p.plan.height).ok()))
            .collect();

        let faces = CropBatch::new(planned.iter().map(|p| p.as_ref().map(|p| p.plan.rows.as_slice())));
        let sizes = (config.aligner.face_len(), config.encoder.embedding_dim);
        let fill = |out: &mut [f32]| {
            let jobs: Vec<FaceJob<'_>> = faces
                .crops
                .iter()
                .filter_map(|&(request, map)| Some(FaceJob { image: images[request]?, map }))
                .collect();
            warp_all(&jobs, config.aligner.size, out);
        };
        let write = |index: usize, response: &mut Response, embeddings: &[f32]| {
            let Some(p) = &planned[index] else { return Ok(()) };
            write_face_outputs(response, &faces, index, &p.plan, embeddings, sizes.1)
        };
        self.host.run(encoder, responder, &faces, sizes, fill, write);
    }
}
