//! Box mode's planning: turns one request's raw input tensors into a crop plan (validated
//! image size, letterbox, and per row the crop region or the reason the row is skipped).
//! Pure: shapes and byte slices in, plans out, so every malformed-request case is unit-tested
//! without a server. The CPU and GPU box paths both plan here; only where the pixels live
//! differs.

use crate::config::BoxEmbedConfig;
use crate::tensors::{
    expect_shape_bytes, f32s, image_size, per_request_shape, row_count, ImageTensor, PlanError, RawTensor,
};
use crop_core::{plan_crop, BoxRejection, CropRegion, Letterbox};

pub struct BoxTensors<'a> {
    pub original: ImageTensor<'a>,
    pub det_boxes: RawTensor<'a>,
    pub num_dets: RawTensor<'a>,
    pub letterbox: RawTensor<'a>,
    /// Optional `image_size` (height, width) of the photo the client sent, when `original`
    /// is a downscaled copy of it; absent means `original` is full size.
    pub image_size: Option<RawTensor<'a>>,
}

/// What to crop for one request: row i of the output comes from `rows[i]`, sampled from the
/// request's `width` x `height` RGB image (exactly `width * height * 3` bytes, checked).
#[derive(Debug)]
pub struct BoxPlan {
    pub width: usize,
    pub height: usize,
    pub rows: Vec<Result<CropRegion, BoxRejection>>,
    /// Every row's detection in the client's image pixels (x1, y1, x2, y2), clamped to the
    /// image; zeros where the detector gave a non-finite box.
    pub boxes: Vec<[f32; 4]>,
}

impl BoxPlan {
    pub fn valid_rows(&self) -> usize {
        self.rows.iter().filter(|r| r.is_ok()).count()
    }

    /// Cannot overflow: [`image_size`] checked this product against the input's byte size.
    pub fn image_bytes(&self) -> usize {
        self.width * self.height * 3
    }
}

pub fn plan_boxes(inputs: &BoxTensors<'_>, config: &BoxEmbedConfig) -> Result<BoxPlan, PlanError> {
    let (width, height) = image_size(&inputs.original)?;
    let num_dets = row_count("num_dets", inputs.num_dets, config.max_boxes, "max_boxes")?;

    let boxes_shape = per_request_shape("det_boxes", inputs.det_boxes.shape, 2)?;
    let box_rows = boxes_shape[0].max(0) as usize;
    if boxes_shape[1] != 4 {
        return Err(PlanError(format!("input 'det_boxes' must be [K, 4], got {boxes_shape:?}")));
    }
    expect_shape_bytes("det_boxes", inputs.det_boxes, 4)?;
    if num_dets > box_rows {
        return Err(PlanError(format!("num_dets is {num_dets} but det_boxes has only {box_rows} rows")));
    }

    let letterbox_shape = per_request_shape("letterbox", inputs.letterbox.shape, 1)?;
    if letterbox_shape != [3] {
        return Err(PlanError(format!("input 'letterbox' must be [3] (scale, pad_x, pad_y), got {letterbox_shape:?}")));
    }
    expect_shape_bytes("letterbox", inputs.letterbox, 4)?;
    let [scale, pad_x, pad_y]: [f32; 3] = {
        let v: Vec<f32> = f32s(inputs.letterbox.bytes).collect();
        [v[0], v[1], v[2]]
    };
    let letterbox = Letterbox::new(scale, pad_x, pad_y).map_err(|e| PlanError(format!("input 'letterbox': {e}")))?;

    let (image_width, image_height) = match inputs.image_size {
        Some(size) => client_image_size(size)?,
        None => (width as f32, height as f32),
    };
    // num_dets <= box_rows, whose byte count was checked above.
    let coords: Vec<f32> = f32s(&inputs.det_boxes.bytes[..num_dets * 16]).collect();
    let detections: Vec<[f32; 4]> = coords.chunks_exact(4).map(|b| [b[0], b[1], b[2], b[3]]).collect();
    let rows = detections
        .iter()
        .map(|&b| plan_crop(b, &letterbox, width, height, config.policy, config.min_box_size))
        .collect();
    let to_image = [image_width / width as f32, image_height / height as f32];
    let boxes = detections
        .iter()
        .map(|&b| box_in_image(letterbox.to_original(b), to_image, [image_width, image_height]))
        .collect();
    Ok(BoxPlan { width, height, rows, boxes })
}

fn client_image_size(size: RawTensor<'_>) -> Result<(f32, f32), PlanError> {
    let shape = per_request_shape("image_size", size.shape, 1)?;
    if shape != [2] {
        return Err(PlanError(format!("input 'image_size' must be [2] (height, width), got {shape:?}")));
    }
    expect_shape_bytes("image_size", size, 4)?;
    let value = |i: usize| i32::from_le_bytes([size.bytes[i], size.bytes[i + 1], size.bytes[i + 2], size.bytes[i + 3]]);
    let (height, width) = (value(0), value(4));
    if height <= 0 || width <= 0 {
        return Err(PlanError(format!("input 'image_size' is {height}x{width}; both sides must be positive")));
    }
    Ok((width as f32, height as f32))
}

/// Scales a box from `original` pixels to the client's image and clamps it there.
fn box_in_image(b: [f32; 4], scale: [f32; 2], size: [f32; 2]) -> [f32; 4] {
    if !b.iter().all(|v| v.is_finite()) {
        return [0.0; 4];
    }
    let x = |v: f32| (v * scale[0]).clamp(0.0, size[0]);
    let y = |v: f32| (v * scale[1]).clamp(0.0, size[1]);
    [x(b[0]), y(b[1]), x(b[2]), y(b[3])]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> BoxEmbedConfig {
        let p = |v: &str| json!({ "string_value": v });
        BoxEmbedConfig::from_model_config(&json!({
            "output": [
                { "name": "box_embeddings", "dims": [-1, 8] },
                { "name": "box_valid", "dims": [-1] },
                { "name": "boxes", "dims": [-1, 4] }
            ],
            "parameters": {
                "encoder_model": p("enc"), "embedding_dim": p("8"), "max_boxes": p("5"),
                "crop_size": p("4"), "crop_policy": p("stretch")
            }
        }))
        .unwrap()
    }

    struct Owned {
        image: Vec<u8>,
        image_shape: Vec<i64>,
        boxes: Vec<u8>,
        boxes_shape: Vec<i64>,
        num_dets: Vec<u8>,
        letterbox: Vec<u8>,
        letterbox_shape: Vec<i64>,
        image_size: Option<Vec<u8>>,
    }

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn request(boxes: &[[f32; 4]], num_dets: i32) -> Owned {
        Owned {
            image: vec![7; 10 * 20 * 3],
            image_shape: vec![1, 10, 20, 3],
            boxes: bytes(&boxes.concat()),
            boxes_shape: vec![1, boxes.len() as i64, 4],
            num_dets: num_dets.to_le_bytes().to_vec(),
            letterbox: bytes(&[1.0, 0.0, 0.0]),
            letterbox_shape: vec![1, 3],
            image_size: None,
        }
    }

    fn plan(o: &Owned) -> Result<BoxPlan, PlanError> {
        plan_boxes(
            &BoxTensors {
                original: ImageTensor { shape: &o.image_shape, byte_size: o.image.len() as u64 },
                det_boxes: RawTensor { shape: &o.boxes_shape, bytes: &o.boxes },
                num_dets: RawTensor { shape: &[1, 1], bytes: &o.num_dets },
                letterbox: RawTensor { shape: &o.letterbox_shape, bytes: &o.letterbox },
                image_size: o.image_size.as_ref().map(|b| RawTensor { shape: &[1, 2], bytes: b }),
            },
            &config(),
        )
    }

    #[test]
    fn bad_rows_are_skipped_in_place() {
        let o = request(
            &[[1.0, 1.0, 5.0, 5.0], [3.0, 3.0, 3.0, 8.0], [f32::NAN, 0.0, 2.0, 2.0], [2.0, 2.0, 9.0, 9.0], [0.0; 4]],
            4,
        );
        let p = plan(&o).unwrap();
        assert_eq!(p.rows.len(), 4, "rows follow num_dets, not K");
        assert!(p.rows[0].is_ok() && p.rows[3].is_ok());
        assert_eq!(p.rows[1], Err(BoxRejection::Degenerate));
        assert_eq!(p.rows[2], Err(BoxRejection::NonFinite));
        assert_eq!(p.valid_rows(), 2);
    }

    #[test]
    fn request_errors_name_the_problem() {
        let too_many = request(&[[0.0, 0.0, 1.0, 1.0]], 2);
        assert!(plan(&too_many).err().unwrap().0.contains("only 1 rows"));
        let over_max = request(&[[0.0, 0.0, 1.0, 1.0]; 6], 6);
        assert!(plan(&over_max).err().unwrap().0.contains("max_boxes"));
        let negative = request(&[], -1);
        assert!(plan(&negative).err().unwrap().0.contains("negative"));
        let mut bad_scale = request(&[], 0);
        bad_scale.letterbox = bytes(&[0.0, 0.0, 0.0]);
        assert!(plan(&bad_scale).err().unwrap().0.contains("letterbox"));
        let mut empty = request(&[], 0);
        empty.image_shape = vec![1, 0, 20, 3];
        empty.image.clear();
        assert!(plan(&empty).err().unwrap().0.contains("non-empty"));
        let mut short = request(&[], 0);
        short.image.pop();
        assert!(plan(&short).err().unwrap().0.contains("original"));
    }

    #[test]
    fn boxes_map_to_the_client_image_and_clamp() {
        // original is 20x10, a half-size copy of a 40x20 photo; letterbox scale 2, pad (1, 3).
        let mut o = request(&[[5.0, 7.0, 21.0, 19.0], [-100.0, 3.0, 1000.0, 23.0], [f32::NAN, 0.0, 1.0, 1.0]], 3);
        o.letterbox = bytes(&[2.0, 1.0, 3.0]);
        assert_eq!(plan(&o).unwrap().boxes[0], [2.0, 2.0, 10.0, 8.0], "without image_size: original pixels");
        o.image_size = Some([20i32, 40].iter().flat_map(|v| v.to_le_bytes()).collect());
        let p = plan(&o).unwrap();
        assert_eq!(p.boxes, [[4.0, 4.0, 20.0, 16.0], [0.0, 0.0, 40.0, 20.0], [0.0; 4]]);
        o.image_size = Some([0i32, 40].iter().flat_map(|v| v.to_le_bytes()).collect());
        assert!(plan(&o).err().unwrap().0.contains("image_size"));
    }

    #[test]
    fn zero_boxes_is_a_valid_empty_plan() {
        let o = request(&[], 0);
        assert_eq!(plan(&o).unwrap().rows.len(), 0);
    }
}
