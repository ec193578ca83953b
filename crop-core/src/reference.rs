//! The reference ROI-align: a literal, per-sample transcription of
//! `docs/crop-semantics.md` step 5 (torchvision `roi_align`, `aligned=True`),
//! and the reference face warp (`docs/faces.md`).
//!
//! Slow on purpose: they are the ground truth for the separable fast path in
//! [`RoiAlign`](crate::RoiAlign), for [`warp_face_into`](crate::warp_face_into)
//! and for the GPU kernels' parity tests.

use crate::{CropRegion, ImageView};

/// Crops `region` from `image` into a new FP32 CHW `[3, crop_size, crop_size]`
/// buffer with values in `[0, 1]`.
///
/// # Panics
/// If `crop_size` or `sampling_ratio` is zero.
pub fn roi_align(image: &ImageView, region: &CropRegion, crop_size: usize, sampling_ratio: usize) -> Vec<f32> {
    assert!(crop_size > 0 && sampling_ratio > 0, "crop_size and sampling_ratio must be >= 1");
    let size = crop_size;
    let s = sampling_ratio;
    let [rx1, ry1, rx2, ry2] = region.roi;
    let bin_w = (rx2 - rx1) / size as f32;
    let bin_h = (ry2 - ry1) / size as f32;
    let start_x = rx1 - 0.5;
    let start_y = ry1 - 0.5;
    let plane = size * size;
    let mut out = vec![0.0f32; 3 * plane];
    for oy in 0..size {
        for ox in 0..size {
            let mut sum = [0.0f32; 3];
            for iy in 0..s {
                let y = start_y + oy as f32 * bin_h + (iy as f32 + 0.5) * bin_h / s as f32;
                for ix in 0..s {
                    let x = start_x + ox as f32 * bin_w + (ix as f32 + 0.5) * bin_w / s as f32;
                    if let Some([mx1, my1, mx2, my2]) = region.mask {
                        let inside = mx1 <= x + 0.5 && x + 0.5 <= mx2 && my1 <= y + 0.5 && y + 0.5 <= my2;
                        if !inside {
                            continue;
                        }
                    }
                    let v = bilinear(image, y, x);
                    for c in 0..3 {
                        sum[c] += v[c];
                    }
                }
            }
            for c in 0..3 {
                out[c * plane + oy * size + ox] = sum[c] / (s * s) as f32 / 255.0;
            }
        }
    }
    out
}

/// torchvision's `bilinear_interpolate` at pixel-index coordinates, per channel.
fn bilinear(image: &ImageView, y: f32, x: f32) -> [f32; 3] {
    let (w, h) = (image.width(), image.height());
    if y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 {
        return [0.0; 3];
    }
    let (y_low, y_high, y) = clamp_axis(y.max(0.0), h);
    let (x_low, x_high, x) = clamp_axis(x.max(0.0), w);
    let ly = y - y_low as f32;
    let lx = x - x_low as f32;
    let hy = 1.0 - ly;
    let hx = 1.0 - lx;
    let p = |yy: usize, xx: usize, c: usize| f32::from(image.data()[(yy * w + xx) * 3 + c]);
    let mut v = [0.0f32; 3];
    for (c, v) in v.iter_mut().enumerate() {
        *v = hy * hx * p(y_low, x_low, c)
            + hy * lx * p(y_low, x_high, c)
            + ly * hx * p(y_high, x_low, c)
            + ly * lx * p(y_high, x_high, c);
    }
    v
}

/// `(low, high, coordinate)` after torchvision's last-pixel clamp.
fn clamp_axis(v: f32, len: usize) -> (usize, usize, f32) {
    let low = v.floor() as usize;
    if low >= len - 1 {
        (len - 1, len - 1, (len - 1) as f32)
    } else {
        (low, low + 1, v)
    }
}

/// Warps a face out of `image` into a new FP32 CHW `[3, size, size]` buffer,
/// `(v - 127.5) / 127.5`: output pixel `(u, v)` samples source
/// `x = m0*u + m1*v + m2`, `y = m3*u + m4*v + m5` bilinearly, each of the 4
/// neighbours outside the image reading 0 (so a sample with `x <= -1`,
/// `x >= W`, `y <= -1` or `y >= H`, or NaN, is 0 and normalises to -1).
pub fn face_warp(image: &ImageView, map: &[f32; 6], size: usize) -> Vec<f32> {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let plane = size * size;
    let mut out = vec![0.0f32; 3 * plane];
    for v_out in 0..size {
        for u_out in 0..size {
            let (u, v) = (u_out as f32, v_out as f32);
            let x = map[0] * u + map[1] * v + map[2];
            let y = map[3] * u + map[4] * v + map[5];
            let mut acc = [0.0f32; 3];
            if x > -1.0 && x < w as f32 && y > -1.0 && y < h as f32 {
                let (fx0, fy0) = (x.floor(), y.floor());
                let (lx, ly) = (x - fx0, y - fy0);
                for k in 0..4 {
                    let yy = fy0 as i64 + (k >> 1);
                    let xx = fx0 as i64 + (k & 1);
                    if yy < 0 || yy >= h || xx < 0 || xx >= w {
                        continue;
                    }
                    let wy = if k >> 1 == 1 { ly } else { 1.0 - ly };
                    let wx = if k & 1 == 1 { lx } else { 1.0 - lx };
                    let p = ((yy * w + xx) * 3) as usize;
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a += wy * wx * f32::from(image.data()[p + c]);
                    }
                }
            }
            for c in 0..3 {
                out[c * plane + v_out * size + u_out] = (acc[c] - 127.5) / 127.5;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(roi: [f32; 4]) -> CropRegion {
        CropRegion { roi, mask: None }
    }

    fn at(out: &[f32], size: usize, c: usize, y: usize, x: usize) -> f32 {
        out[c * size * size + y * size + x]
    }

    #[test]
    fn constant_image_gives_constant_inside() {
        let data: Vec<u8> = (0..6 * 4).flat_map(|_| [51u8, 102, 255]).collect();
        let img = ImageView::new(&data, 6, 4).unwrap();
        let out = roi_align(&img, &region([0.5, 0.25, 5.0, 3.9]), 5, 2);
        for (c, want) in [0.2f32, 0.4, 1.0].into_iter().enumerate() {
            for i in 0..25 {
                assert!((out[c * 25 + i] - want).abs() < 1e-6, "c{c} i{i}: {}", out[c * 25 + i]);
            }
        }
    }

    #[test]
    fn two_by_two_bilinear_values() {
        // Red channel p = [[0, 100], [200, 250]], green = 255 - red, blue = 7.
        let red = [0u8, 100, 200, 250];
        let data: Vec<u8> = red.iter().flat_map(|&r| [r, 255 - r, 7]).collect();
        let img = ImageView::new(&data, 2, 2).unwrap();
        // One sample per output at the centre of the image: x = y = 0.5 in
        // index coordinates -> mean of the four pixels.
        let out = roi_align(&img, &region([0.0, 0.0, 2.0, 2.0]), 1, 1);
        assert!((out[0] - 137.5 / 255.0).abs() < 1e-6);
        assert!((out[1] - 117.5 / 255.0).abs() < 1e-6);
        assert!((out[2] - 7.0 / 255.0).abs() < 1e-6);
        // 2x2 output, one sample each at index coordinates 0 and 1: the pixels.
        let out = roi_align(&img, &region([0.0, 0.0, 2.0, 2.0]), 2, 1);
        for (i, &r) in red.iter().enumerate() {
            assert!((out[i] - f32::from(r) / 255.0).abs() < 1e-6, "{i}: {}", out[i]);
        }
        // A 1x1 output over the top-left quarter, 2x2 samples at index
        // coordinates -0.25 and 0.25: clamped to 0 / 0.25 (x and y).
        // Values: (0,0) 0; (0,.25) 25; (.25,0) 50; (.25,.25) 0.75*(0.75*0+0.25*100)+0.25*(0.75*200+0.25*250) = 71.875.
        let out = roi_align(&img, &region([0.0, 0.0, 1.0, 1.0]), 1, 2);
        let want = (0.0 + 25.0 + 50.0 + 71.875) / 4.0 / 255.0;
        assert!((at(&out, 1, 0, 0, 0) - want).abs() < 1e-6, "{} vs {want}", out[0]);
        // Past the last pixel the value holds (x > W-1 clamps to W-1).
        let out = roi_align(&img, &region([1.5, 1.5, 2.0, 2.0]), 1, 1);
        assert!((out[0] - 250.0 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn samples_far_outside_are_zero() {
        let data = [200u8; 3 * 3 * 3];
        let img = ImageView::new(&data, 3, 3).unwrap();
        // One sample per output at index (y, x) = (oy - 2, ox - 2): -2 and 4, 5
        // are outside (> 3 = W = H); -1 and 3 sit on the limits and read the
        // edge pixels.
        let out = roi_align(&img, &region([-2.0, -2.0, 6.0, 6.0]), 8, 1);
        let inside = |i: usize| (1..6).contains(&i);
        for y in 0..8 {
            for x in 0..8 {
                let want = if inside(y) && inside(x) { 200.0 } else { 0.0 };
                let got = at(&out, 8, 0, y, x) * 255.0;
                assert!((got - want).abs() < 1e-3, "y{y} x{x}: {got}");
            }
        }
    }

    #[test]
    fn pad_mask_leaves_zero_bands() {
        let data = [255u8; 40 * 10 * 3];
        let img = ImageView::new(&data, 40, 10).unwrap();
        // A 40x10 box padded to a 40x40 square: 8-pixel output, 5 px per bin,
        // so the box covers rows [15, 25) of the square = output rows 3 and 4.
        let r = CropRegion { roi: [0.0, -15.0, 40.0, 25.0], mask: Some([0.0, 0.0, 40.0, 10.0]) };
        let out = roi_align(&img, &r, 8, 2);
        for c in 0..3 {
            for y in 0..8 {
                for x in 0..8 {
                    let want = if (3..5).contains(&y) { 1.0 } else { 0.0 };
                    assert!((at(&out, 8, c, y, x) - want).abs() < 1e-6, "c{c} y{y} x{x}");
                }
            }
        }
    }
}
