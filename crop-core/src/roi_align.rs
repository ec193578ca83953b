//! The fast ROI-align: [`RoiAlign::crop_into`] for one crop and [`crop_all`]
//! for a batch spread over the rayon pool. Same result as
//! [`reference::roi_align`](crate::reference::roi_align) up to float
//! summation order.
//!
//! Boxes are axis-aligned, so a sample's bilinear weight is a product of a
//! row weight and a column weight, and so are the out-of-image and mask
//! tests. Each output row and column therefore gets its source taps (pixel
//! index and summed weight over its `s` samples) computed once per crop. Per
//! output row, the row taps blend whole source rows (only the column span
//! the crop reads) into an f32 line, a contiguous loop that vectorises; then
//! each output pixel gathers its few column taps from that line.

use crate::{CropError, CropRegion, ImageView};
use rayon::prelude::*;

/// ROI-align to `crop_size x crop_size` with `sampling_ratio^2` samples per
/// output pixel; output FP32 CHW with values in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoiAlign {
    pub crop_size: usize,
    pub sampling_ratio: usize,
}

/// One crop of a batch: the image it reads and the region it samples.
#[derive(Debug, Clone, Copy)]
pub struct CropJob<'a> {
    pub image: ImageView<'a>,
    pub region: CropRegion,
}

impl RoiAlign {
    /// Both parameters must be >= 1, and a crop must be addressable.
    pub fn new(crop_size: usize, sampling_ratio: usize) -> Result<Self, CropError> {
        let len = crop_size.checked_mul(crop_size).and_then(|n| n.checked_mul(3));
        if crop_size == 0 || len.is_none() {
            return Err(CropError::InvalidCropSize(crop_size));
        }
        if sampling_ratio == 0 {
            return Err(CropError::InvalidSamplingRatio(sampling_ratio));
        }
        Ok(Self { crop_size, sampling_ratio })
    }

    /// Floats in one crop: `3 * crop_size * crop_size`.
    pub fn crop_len(&self) -> usize {
        3 * self.crop_size * self.crop_size
    }

    /// Crops `region` from `image` into `out` (`[3, S, S]`, CHW).
    ///
    /// # Panics
    /// If `out.len() != self.crop_len()`.
    pub fn crop_into(&self, image: &ImageView, region: &CropRegion, out: &mut [f32]) {
        self.crop_with(&mut Scratch::default(), image, region, out);
    }

    fn crop_with(&self, scratch: &mut Scratch, image: &ImageView, region: &CropRegion, out: &mut [f32]) {
        assert_eq!(out.len(), self.crop_len(), "output buffer is not one crop");
        let size = self.crop_size;
        let s = self.sampling_ratio;
        let [rx1, ry1, rx2, ry2] = region.roi;
        let (mask_x, mask_y) = match region.mask {
            Some([mx1, my1, mx2, my2]) => (Some((mx1, mx2)), Some((my1, my2))),
            None => (None, None),
        };
        let x_axis = Axis { start: rx1 - 0.5, bin: (rx2 - rx1) / size as f32, len: image.width(), mask: mask_x };
        let y_axis = Axis { start: ry1 - 0.5, bin: (ry2 - ry1) / size as f32, len: image.height(), mask: mask_y };
        // The sample mean and the /255 fold into the tap weights.
        let norm = 1.0 / s as f32;
        scratch.cols.build(&x_axis, size, s, norm);
        scratch.rows.build(&y_axis, size, s, norm / 255.0);

        let Some((col_lo, col_hi)) = scratch.cols.span() else {
            out.fill(0.0);
            return;
        };
        scratch.gather.build(&scratch.cols, col_lo);
        let line_len = (col_hi - col_lo + 1) * 3;
        // One spare float: the gather reads four floats per tap (RGB and the
        // next pixel's R, unused), one bounds check instead of three.
        scratch.line.resize(line_len + 1, 0.0);
        let line = &mut scratch.line[..];

        let stride = image.width() * 3;
        let data = image.data();
        let plane = size * size;
        let (r_plane, rest) = out.split_at_mut(plane);
        let (g_plane, b_plane) = rest.split_at_mut(plane);
        for oy in 0..size {
            let out_row = oy * size..(oy + 1) * size;
            let (r_row, g_row, b_row) =
                (&mut r_plane[out_row.clone()], &mut g_plane[out_row.clone()], &mut b_plane[out_row]);
            let (rows, row_w) = scratch.rows.taps(oy);
            if rows.is_empty() {
                r_row.fill(0.0);
                g_row.fill(0.0);
                b_row.fill(0.0);
                continue;
            }
            let src = |r: usize| &data[r * stride + col_lo * 3..][..line_len];
            blend_rows(&mut line[..line_len], rows, row_w, src);
            scratch.gather.apply(line, r_row, g_row, b_row);
        }
    }
}

/// Crops every job into its slot of `out` (`[jobs.len(), 3, S, S]`), one
/// crop per rayon task, each worker reusing its tap and line buffers.
///
/// # Panics
/// If `out.len() != jobs.len() * align.crop_len()`.
pub fn crop_all(align: &RoiAlign, jobs: &[CropJob], out: &mut [f32]) {
    let crop_len = align.crop_len();
    assert_eq!(out.len(), jobs.len() * crop_len, "output buffer does not hold one crop per job");
    if crop_len == 0 {
        return;
    }
    out.par_chunks_mut(crop_len).zip(jobs.par_iter()).for_each_init(Scratch::default, |scratch, (crop, job)| {
        align.crop_with(scratch, &job.image, &job.region, crop);
    });
}

/// Buffers of one crop, kept across the crops of a worker.
#[derive(Default)]
struct Scratch {
    rows: AxisTaps,
    cols: AxisTaps,
    gather: Gather,
    line: Vec<f32>,
}

/// The sampling along one axis: spec step 5 with `start = r1 - 0.5`.
struct Axis {
    start: f32,
    bin: f32,
    len: usize,
    mask: Option<(f32, f32)>,
}

/// Per output index, the source pixels it reads and their summed weights,
/// in compressed-row form: output `o` owns `bounds[o]..bounds[o + 1]`.
#[derive(Default)]
struct AxisTaps {
    bounds: Vec<usize>,
    index: Vec<usize>,
    weight: Vec<f32>,
}

impl AxisTaps {
    /// Taps of `size` outputs with `s` samples each; every bilinear weight
    /// is multiplied by `norm`. Samples outside the image or the mask add no
    /// tap, exactly where the reference adds zero.
    fn build(&mut self, axis: &Axis, size: usize, s: usize, norm: f32) {
        self.bounds.clear();
        self.index.clear();
        self.weight.clear();
        self.bounds.push(0);
        let last = axis.len - 1;
        for o in 0..size {
            let first = self.index.len();
            for i in 0..s {
                // The reference's expression, term for term, so positions agree bitwise.
                let pos = axis.start + o as f32 * axis.bin + (i as f32 + 0.5) * axis.bin / s as f32;
                if pos < -1.0 || pos > axis.len as f32 {
                    continue;
                }
                if let Some((lo, hi)) = axis.mask {
                    if !(lo <= pos + 0.5 && pos + 0.5 <= hi) {
                        continue;
                    }
                }
                let p = pos.max(0.0);
                let low = p.floor() as usize;
                let (low, high, p) = if low >= last { (last, last, last as f32) } else { (low, low + 1, p) };
                let l = p - low as f32;
                self.add(first, low, (1.0 - l) * norm);
                self.add(first, high, l * norm);
            }
            self.bounds.push(self.index.len());
        }
    }

    /// Adds `w` to pixel `idx` among the taps from `first` on, merging repeats
    /// so each source pixel is read once per output.
    fn add(&mut self, first: usize, idx: usize, w: f32) {
        if w == 0.0 {
            return;
        }
        match self.index[first..].iter().position(|&i| i == idx) {
            Some(k) => self.weight[first + k] += w,
            None => {
                self.index.push(idx);
                self.weight.push(w);
            }
        }
    }

    fn taps(&self, o: usize) -> (&[usize], &[f32]) {
        let taps = self.bounds[o]..self.bounds[o + 1];
        (&self.index[taps.clone()], &self.weight[taps])
    }

    /// The lowest and highest pixel read, if any.
    fn span(&self) -> Option<(usize, usize)> {
        let lo = self.index.iter().min()?;
        let hi = self.index.iter().max()?;
        Some((*lo, *hi))
    }
}

/// The column taps padded to one tap count for all outputs (zero weights),
/// as float offsets into the blended line: a fixed loop shape per crop.
#[derive(Default)]
struct Gather {
    taps: usize,
    offset: Vec<usize>,
    weight: Vec<f32>,
}

impl Gather {
    fn build(&mut self, cols: &AxisTaps, col_lo: usize) {
        let outputs = cols.bounds.len() - 1;
        self.taps = cols.bounds.windows(2).map(|b| b[1] - b[0]).max().unwrap_or(0);
        self.offset.clear();
        self.weight.clear();
        for o in 0..outputs {
            let (idx, w) = cols.taps(o);
            let pad = self.taps - idx.len();
            self.offset.extend(idx.iter().map(|&i| (i - col_lo) * 3));
            self.offset.extend(std::iter::repeat_n(0, pad));
            self.weight.extend_from_slice(w);
            self.weight.extend(std::iter::repeat_n(0.0, pad));
        }
    }

    /// Writes one output row per channel from the blended line.
    fn apply(&self, line: &[f32], r: &mut [f32], g: &mut [f32], b: &mut [f32]) {
        // Literal tap counts let the compiler unroll the common cases.
        match self.taps {
            1 => gather(1, &self.offset, &self.weight, line, r, g, b),
            2 => gather(2, &self.offset, &self.weight, line, r, g, b),
            3 => gather(3, &self.offset, &self.weight, line, r, g, b),
            4 => gather(4, &self.offset, &self.weight, line, r, g, b),
            n => gather(n, &self.offset, &self.weight, line, r, g, b),
        }
    }
}

/// `taps` outputs' worth of gather; `taps >= 1` since a crop that reads no
/// column returns before gathering.
#[inline(always)]
fn gather(taps: usize, offset: &[usize], weight: &[f32], line: &[f32], r: &mut [f32], g: &mut [f32], b: &mut [f32]) {
    let columns = offset.chunks_exact(taps).zip(weight.chunks_exact(taps));
    for ((((offs, ws), r), g), b) in columns.zip(r).zip(g).zip(b) {
        let mut acc = [0.0f32; 4];
        for (&off, &w) in offs.iter().zip(ws) {
            let px: &[f32; 4] = line[off..off + 4].try_into().expect("four floats");
            acc = [acc[0] + w * px[0], acc[1] + w * px[1], acc[2] + w * px[2], acc[3] + w * px[3]];
        }
        *r = acc[0];
        *g = acc[1];
        *b = acc[2];
    }
}

/// `line = sum_k weights[k] * src(rows[k])`, two source rows per pass so the
/// line is stored half as often.
fn blend_rows<'a>(line: &mut [f32], rows: &[usize], weights: &[f32], src: impl Fn(usize) -> &'a [u8]) {
    let mut taps = rows.iter().copied().zip(weights.iter().copied());
    match (taps.next(), taps.next()) {
        (Some((ra, wa)), Some((rb, wb))) => {
            for ((d, &a), &b) in line.iter_mut().zip(src(ra)).zip(src(rb)) {
                *d = wa * f32::from(a) + wb * f32::from(b);
            }
        }
        (Some((ra, wa)), None) => {
            for (d, &a) in line.iter_mut().zip(src(ra)) {
                *d = wa * f32::from(a);
            }
        }
        _ => return,
    }
    loop {
        match (taps.next(), taps.next()) {
            (Some((ra, wa)), Some((rb, wb))) => {
                for ((d, &a), &b) in line.iter_mut().zip(src(ra)).zip(src(rb)) {
                    *d += wa * f32::from(a) + wb * f32::from(b);
                }
            }
            (Some((ra, wa)), None) => {
                for (d, &a) in line.iter_mut().zip(src(ra)) {
                    *d += wa * f32::from(a);
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_validates() {
        assert_eq!(RoiAlign::new(256, 2).unwrap().crop_len(), 3 * 256 * 256);
        assert_eq!(RoiAlign::new(0, 2), Err(CropError::InvalidCropSize(0)));
        assert_eq!(RoiAlign::new(usize::MAX / 2, 2), Err(CropError::InvalidCropSize(usize::MAX / 2)));
        assert_eq!(RoiAlign::new(7, 0), Err(CropError::InvalidSamplingRatio(0)));
    }

    #[test]
    fn taps_merge_and_sum_to_one_inside() {
        let mut taps = AxisTaps::default();
        // 10 pixels, ROI [2, 6] to 4 outputs, 3 samples each: all inside.
        let axis = Axis { start: 1.5, bin: 1.0, len: 10, mask: None };
        taps.build(&axis, 4, 3, 1.0 / 3.0);
        for o in 0..4 {
            let (idx, w) = taps.taps(o);
            let mut sorted = idx.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), idx.len(), "repeated pixel in {idx:?}");
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert_eq!(taps.span(), Some((1, 6)));
    }
}
