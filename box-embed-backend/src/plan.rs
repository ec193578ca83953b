//! Turns one request's raw input tensors into a crop plan: validated image size, letterbox
//! and per-row crop regions (or the reason a row is skipped), and lays the plans of a whole
//! execute call out as one batch of crops. Pure: shapes and byte slices in, plans out, so
//! every malformed-request case is unit-tested without a server. The CPU and GPU paths both
//! plan and scatter through here; only where the pixels live differs.

use crate::config::BoxEmbedConfig;
use crop_core::{plan_crop, BoxRejection, CropRegion, Letterbox};
use std::ops::Range;

/// A request-level problem; the whole request fails with this message (INVALID_ARG).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct PlanError(pub String);

/// One input tensor as received: its shape (with the batch dimension) and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct RawTensor<'a> {
    pub shape: &'a [i64],
    pub bytes: &'a [u8],
}

/// The image input: its shape and size only, since its pixels may be in device memory.
#[derive(Debug, Clone, Copy)]
pub struct ImageTensor<'a> {
    pub shape: &'a [i64],
    pub byte_size: u64,
}

pub struct RequestTensors<'a> {
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
pub struct RequestPlan {
    pub width: usize,
    pub height: usize,
    pub rows: Vec<Result<CropRegion, BoxRejection>>,
    /// Every row's detection in the client's image pixels (x1, y1, x2, y2), clamped to the
    /// image; zeros where the detector gave a non-finite box.
    pub boxes: Vec<[f32; 4]>,
}

impl RequestPlan {
    pub fn valid_rows(&self) -> usize {
        self.rows.iter().filter(|r| r.is_ok()).count()
    }

    pub fn image_bytes(&self) -> usize {
        self.width * self.height * 3
    }
}

/// Drops the leading batch dimension of 1 that every request of a batching model carries.
pub(crate) fn per_request_shape<'s>(name: &str, shape: &'s [i64], rank: usize) -> Result<&'s [i64], PlanError> {
    match shape {
        [1, rest @ ..] if rest.len() == rank => Ok(rest),
        _ => Err(PlanError(format!("input '{name}' has shape {shape:?}; expected a batch of 1 and {rank} more dims"))),
    }
}

pub(crate) fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

pub(crate) fn expect_len(name: &str, bytes: &[u8], len: usize) -> Result<(), PlanError> {
    if bytes.len() != len {
        return Err(PlanError(format!("input '{name}' holds {} bytes, its shape needs {len}", bytes.len())));
    }
    Ok(())
}

/// Width and height of the `original` image input, checked against its byte size.
pub(crate) fn image_size(original: &ImageTensor<'_>) -> Result<(usize, usize), PlanError> {
    let image_shape = per_request_shape("original", original.shape, 3)?;
    let (height, width, channels) = (image_shape[0], image_shape[1], image_shape[2]);
    if channels != 3 || height <= 0 || width <= 0 {
        return Err(PlanError(format!("input 'original' must be a non-empty [H, W, 3] image, got {image_shape:?}")));
    }
    let (height, width) = (height as usize, width as usize);
    let image_bytes = width.checked_mul(height).and_then(|n| n.checked_mul(3));
    if image_bytes.map(|n| n as u64) != Some(original.byte_size) {
        return Err(PlanError(format!(
            "input 'original' holds {} bytes, a {width}x{height} RGB image needs {}",
            original.byte_size,
            image_bytes.map_or("more than fits in memory".to_string(), |n| n.to_string())
        )));
    }
    Ok((width, height))
}

/// A row count input (`num_dets`, `num_faces`): one INT32, at least 0, at most `max`
/// (named `max_name` in the message).
pub(crate) fn row_count(name: &str, count: RawTensor<'_>, max: usize, max_name: &str) -> Result<usize, PlanError> {
    let shape = per_request_shape(name, count.shape, 1)?;
    expect_len(name, count.bytes, 4 * shape.iter().product::<i64>().max(0) as usize)?;
    let value = match count.bytes {
        [a, b, c, d] => i32::from_le_bytes([*a, *b, *c, *d]),
        _ => return Err(PlanError(format!("input '{name}' must hold exactly one INT32"))),
    };
    if value < 0 {
        return Err(PlanError(format!("{name} is {value}; it cannot be negative")));
    }
    let value = value as usize;
    if value > max {
        return Err(PlanError(format!("{name} is {value}, more than {max_name} ({max})")));
    }
    Ok(value)
}

pub fn plan_request(inputs: &RequestTensors<'_>, config: &BoxEmbedConfig) -> Result<RequestPlan, PlanError> {
    let (width, height) = image_size(&inputs.original)?;
    let num_dets = row_count("num_dets", inputs.num_dets, config.max_boxes, "max_boxes")?;

    let boxes_shape = per_request_shape("det_boxes", inputs.det_boxes.shape, 2)?;
    let box_rows = boxes_shape[0].max(0) as usize;
    if boxes_shape[1] != 4 {
        return Err(PlanError(format!("input 'det_boxes' must be [K, 4], got {boxes_shape:?}")));
    }
    expect_len("det_boxes", inputs.det_boxes.bytes, box_rows * 16)?;
    if num_dets > box_rows {
        return Err(PlanError(format!("num_dets is {num_dets} but det_boxes has only {box_rows} rows")));
    }

    let letterbox_shape = per_request_shape("letterbox", inputs.letterbox.shape, 1)?;
    if letterbox_shape != [3] {
        return Err(PlanError(format!("input 'letterbox' must be [3] (scale, pad_x, pad_y), got {letterbox_shape:?}")));
    }
    expect_len("letterbox", inputs.letterbox.bytes, 12)?;
    let [scale, pad_x, pad_y]: [f32; 3] = {
        let v: Vec<f32> = f32s(inputs.letterbox.bytes).collect();
        [v[0], v[1], v[2]]
    };
    let letterbox = Letterbox::new(scale, pad_x, pad_y).map_err(|e| PlanError(format!("input 'letterbox': {e}")))?;

    let (image_width, image_height) = match inputs.image_size {
        Some(size) => client_image_size(size)?,
        None => (width as f32, height as f32),
    };
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
    Ok(RequestPlan { width, height, rows, boxes })
}

fn client_image_size(size: RawTensor<'_>) -> Result<(f32, f32), PlanError> {
    let shape = per_request_shape("image_size", size.shape, 1)?;
    if shape != [2] {
        return Err(PlanError(format!("input 'image_size' must be [2] (height, width), got {shape:?}")));
    }
    expect_len("image_size", size.bytes, 8)?;
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

/// The crops of one execute call: the valid rows of every planned request, request after
/// request, so each request's crops (and embeddings) are contiguous. `T` is what one crop
/// needs: a [`CropRegion`] in box mode, a warp map in face mode.
#[derive(Debug)]
pub struct CropBatch<T = CropRegion> {
    /// `(request index, what to crop)` of every crop, in crop order.
    pub crops: Vec<(usize, T)>,
    /// Index of each request's first crop.
    first_crop: Vec<usize>,
}

impl<T: Copy> CropBatch<T> {
    /// From each request's rows (`None` for a request that failed): the `Ok` rows are crops.
    pub fn new<'p, E: 'p>(requests: impl IntoIterator<Item = Option<&'p [Result<T, E>]>>) -> Self
    where
        T: 'p,
    {
        let mut crops = Vec::new();
        let mut first_crop = Vec::new();
        for (request, rows) in requests.into_iter().enumerate() {
            first_crop.push(crops.len());
            for row in rows.into_iter().flatten().flatten() {
                crops.push((request, *row));
            }
        }
        Self { crops, first_crop }
    }

    pub fn len(&self) -> usize {
        self.crops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.crops.is_empty()
    }

    /// Gives `error` to every request owning a crop in `crops` that has no error yet.
    pub fn fail<Err: Clone>(&self, crops: Range<usize>, error: &Err, errors: &mut [Option<Err>]) {
        for &(request, _) in &self.crops[crops] {
            errors[request].get_or_insert_with(|| error.clone());
        }
    }

    /// Runs of consecutive valid output rows of `request` (whose rows are `rows`): each run
    /// is `len` rows starting at output row `row`, filled from consecutive crops starting at
    /// `crop`. Rows outside every run are skipped (zero, marked invalid), and never shift the
    /// rows after them.
    pub fn row_runs<E>(&self, request: usize, rows: &[Result<T, E>]) -> Vec<RowRun> {
        let mut runs: Vec<RowRun> = Vec::new();
        let mut crop = self.first_crop[request];
        for (row, region) in rows.iter().enumerate() {
            if region.is_err() {
                continue;
            }
            match runs.last_mut() {
                Some(run) if run.row + run.len == row => run.len += 1,
                _ => runs.push(RowRun { row, crop, len: 1 }),
            }
            crop += 1;
        }
        runs
    }
}

/// See [`CropBatch::row_runs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRun {
    pub row: usize,
    pub crop: usize,
    pub len: usize,
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

    fn plan(o: &Owned) -> Result<RequestPlan, PlanError> {
        plan_request(
            &RequestTensors {
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
    fn batch_runs_skip_rows_without_shifting() {
        let ok = |x: f32| Ok(CropRegion { roi: [x, 0.0, x + 1.0, 1.0], mask: None });
        let plans = [
            Some(RequestPlan {
                width: 4,
                height: 4,
                rows: vec![ok(0.0), Err(BoxRejection::Degenerate), ok(1.0), ok(2.0)],
                boxes: vec![],
            }),
            None,
            Some(RequestPlan { width: 4, height: 4, rows: vec![Err(BoxRejection::NonFinite), ok(3.0)], boxes: vec![] }),
        ];
        let batch = CropBatch::new(plans.iter().map(|p| p.as_ref().map(|p| p.rows.as_slice())));
        assert_eq!(batch.len(), 4);
        assert_eq!(batch.crops.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 0, 0, 2]);
        let runs = batch.row_runs(0, &plans[0].as_ref().unwrap().rows);
        assert_eq!(runs, [RowRun { row: 0, crop: 0, len: 1 }, RowRun { row: 2, crop: 1, len: 2 }]);
        assert_eq!(batch.row_runs(2, &plans[2].as_ref().unwrap().rows), [RowRun { row: 1, crop: 3, len: 1 }]);

        let mut errors = vec![None, None, Some("earlier")];
        batch.fail(2..4, &"encoder", &mut errors);
        assert_eq!(errors, [Some("encoder"), None, Some("earlier")]);
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
