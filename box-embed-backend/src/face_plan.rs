//! Face mode: turns one request's raw input tensors (`original`, `num_faces`,
//! `face_landmarks`) into a face plan: the validated image size and, per face row, the warp
//! map of its aligned face or the reason its landmarks were rejected. Pure, like
//! [`crate::box_plan`], over the same tensor reading ([`crate::tensors`]), so every
//! malformed-request case is unit-tested without a server.

use crate::config::{FaceAlignConfig, INPUT_LANDMARKS, INPUT_NUM_FACES};
use crate::tensors::{
    expect_shape_bytes, f32s, image_size, per_request_shape, row_count, ImageTensor, PlanError, RawTensor,
};
use crop_core::LandmarkRejection;

pub struct FaceTensors<'a> {
    pub original: ImageTensor<'a>,
    pub num_faces: RawTensor<'a>,
    pub landmarks: RawTensor<'a>,
}

/// What to warp for one request: row i of the output comes from `rows[i]`, sampled from the
/// request's `width` x `height` RGB image.
#[derive(Debug)]
pub struct FacePlan {
    pub width: usize,
    pub height: usize,
    pub rows: Vec<Result<[f32; 6], LandmarkRejection>>,
}

pub fn plan_faces(inputs: &FaceTensors<'_>, config: &FaceAlignConfig) -> Result<FacePlan, PlanError> {
    let (width, height) = image_size(&inputs.original)?;
    let num_faces = row_count(INPUT_NUM_FACES, inputs.num_faces, config.max_faces, "max_faces")?;
    let shape = per_request_shape(INPUT_LANDMARKS, inputs.landmarks.shape, 3)?;
    if shape[1..] != [5, 2] {
        return Err(PlanError(format!("input '{INPUT_LANDMARKS}' must be [K, 5, 2], got {shape:?}")));
    }
    let landmark_rows = shape[0].max(0) as usize;
    expect_shape_bytes(INPUT_LANDMARKS, inputs.landmarks, 4)?;
    if num_faces > landmark_rows {
        return Err(PlanError(format!(
            "{INPUT_NUM_FACES} is {num_faces} but {INPUT_LANDMARKS} has only {landmark_rows} rows"
        )));
    }
    // num_faces <= landmark_rows, whose byte count was checked above.
    let coords: Vec<f32> = f32s(&inputs.landmarks.bytes[..num_faces * 40]).collect();
    let rows = coords
        .chunks_exact(10)
        .map(|c| {
            let landmarks = std::array::from_fn(|i| [c[2 * i], c[2 * i + 1]]);
            config.aligner.plan(landmarks, width, height)
        })
        .collect();
    Ok(FacePlan { width, height, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FaceAlignConfig;
    use crop_core::ARCFACE_TEMPLATE_112;
    use serde_json::json;

    fn config() -> FaceAlignConfig {
        let p = |v: &str| json!({ "string_value": v });
        FaceAlignConfig::from_model_config(&json!({
            "output": [
                { "name": "face_embeddings", "dims": [-1, 8] },
                { "name": "face_valid", "dims": [-1] }
            ],
            "parameters": {
                "mode": p("faces"), "encoder_model": p("enc"), "embedding_dim": p("8"),
                "max_faces": p("4"), "face_size": p("112")
            }
        }))
        .unwrap()
    }

    fn plan(faces: &[[[f32; 2]; 5]], num_faces: i32, image: (i64, i64)) -> Result<FacePlan, PlanError> {
        let landmarks: Vec<u8> = faces.iter().flatten().flatten().flat_map(|v| v.to_le_bytes()).collect();
        let shape = [1, faces.len() as i64, 5, 2];
        let count = num_faces.to_le_bytes();
        let (h, w) = image;
        plan_faces(
            &FaceTensors {
                original: ImageTensor { shape: &[1, h, w, 3], byte_size: (h * w * 3) as u64 },
                num_faces: RawTensor { shape: &[1, 1], bytes: &count },
                landmarks: RawTensor { shape: &shape, bytes: &landmarks },
            },
            &config(),
        )
    }

    const FACE: [[f32; 2]; 5] = ARCFACE_TEMPLATE_112;

    #[test]
    fn degenerate_faces_are_invalid_in_place() {
        let mut nan = FACE;
        nan[1][0] = f32::NAN;
        let p = plan(&[FACE, nan, [[5.0, 5.0]; 5], FACE, FACE], 4, (200, 300)).unwrap();
        assert_eq!(p.rows.len(), 4, "rows follow num_faces, not K");
        assert!(p.rows[0].is_ok() && p.rows[3].is_ok());
        assert_eq!(p.rows[1], Err(LandmarkRejection::NonFinite));
        assert_eq!(p.rows[2], Err(LandmarkRejection::Coincident));
        assert_eq!((p.width, p.height), (300, 200));
    }

    #[test]
    fn request_errors_name_the_problem() {
        assert!(plan(&[FACE], 2, (200, 300)).unwrap_err().0.contains("only 1 rows"));
        assert!(plan(&[FACE; 5], 5, (200, 300)).unwrap_err().0.contains("max_faces"));
        assert!(plan(&[], -1, (200, 300)).unwrap_err().0.contains("negative"));
        assert!(plan(&[], 0, (0, 300)).unwrap_err().0.contains("non-empty"));
        assert_eq!(plan(&[], 0, (200, 300)).unwrap().rows.len(), 0);
    }
}
