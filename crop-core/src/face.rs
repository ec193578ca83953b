//! Face alignment: the least-squares similarity transform (Umeyama) from a
//! face's 5 landmarks to a face template, the checks that reject degenerate
//! landmarks, and the bilinear warp from the original image to the aligned
//! face, normalised `(x - 127.5) / 127.5` for ArcFace-style encoders.
//!
//! The warp follows `cv2.warpAffine(image, M, (S, S), borderValue=0)` with
//! floating-point coordinates: output pixel `(u, v)` (pixel centres at
//! integers) samples the source at `M^-1 (u, v)`; each of the 4 bilinear
//! neighbours outside the image reads 0. The CUDA kernel `face_warp_f32`
//! (cuda-kernels) implements the same map; [`reference::face_warp`] is the
//! plain per-pixel version both are tested against.
//!
//! [`reference::face_warp`]: crate::reference::face_warp

use crate::{CropError, ImageView};
use rayon::prelude::*;

/// The standard ArcFace 5-point template for 112x112 faces, `(x, y)` in
/// output pixels: left eye, right eye, nose tip, left and right mouth corner
/// (left/right as seen in the image), as published with InsightFace.
pub const ARCFACE_TEMPLATE_112: [[f32; 2]; 5] =
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];

/// A 2-D similarity `p -> [a -b; b a] p + t`: rotation, uniform scale
/// `sqrt(a^2 + b^2)` and translation, no reflection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    pub fn apply(&self, [x, y]: [f64; 2]) -> [f64; 2] {
        [self.a * x - self.b * y + self.tx, self.b * x + self.a * y + self.ty]
    }

    /// The inverse as the warp's 2x3 map `[m0 m1 m2; m3 m4 m5]`:
    /// `x = m0*u + m1*v + m2`, `y = m3*u + m4*v + m5`. `None` when the
    /// scale is zero or not finite.
    pub fn inverse_map(&self) -> Option<[f32; 6]> {
        let s2 = self.a * self.a + self.b * self.b;
        if !(s2.is_finite() && s2 > 0.0) {
            return None;
        }
        let (ia, ib) = (self.a / s2, self.b / s2);
        // Inverse linear part [ia ib; -ib ia]; translation -(that) * t.
        let map = [ia, ib, -(ia * self.tx + ib * self.ty), -ib, ia, ib * self.tx - ia * self.ty];
        map.iter().all(|v| v.is_finite()).then(|| map.map(|v| v as f32))
    }
}

/// Least-squares similarity taking `src[i]` to `dst[i]` (Umeyama 1991,
/// restricted to 2-D where it has a closed form): with centred points p, q,
/// `a = sum(p.q) / sum|p|^2`, `b = sum(p x q) / sum|p|^2`, `t = mean(dst) -
/// [a -b; b a] mean(src)`. Minimising over (a, b) is a linear least-squares
/// problem whose optimum is Umeyama's rotation and scale, including his
/// reflection correction. `None` when `src` has no spread or the lengths
/// differ or are zero.
pub fn estimate_similarity(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Option<Similarity> {
    if src.len() != dst.len() || src.is_empty() {
        return None;
    }
    let n = src.len() as f64;
    let mean = |points: &[[f64; 2]]| {
        let [sx, sy] = points.iter().fold([0.0, 0.0], |[x, y], p| [x + p[0], y + p[1]]);
        [sx / n, sy / n]
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
    for (p, q) in src.iter().zip(dst) {
        let (px, py) = (p[0] - ms[0], p[1] - ms[1]);
        let (qx, qy) = (q[0] - md[0], q[1] - md[1]);
        dot += px * qx + py * qy;
        cross += px * qy - py * qx;
        norm += px * px + py * py;
    }
    if !(norm.is_finite() && norm > 0.0) {
        return None;
    }
    let (a, b) = (dot / norm, cross / norm);
    let tx = md[0] - (a * ms[0] - b * ms[1]);
    let ty = md[1] - (b * ms[0] + a * ms[1]);
    Some(Similarity { a, b, tx, ty })
}

/// Why a face gets no embedding; its output row is marked invalid, never
/// dropped, and the other faces are unaffected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LandmarkRejection {
    #[error("a landmark is NaN or infinite")]
    NonFinite,
    #[error("a landmark lies outside the image by more than the allowed margin")]
    OutsideImage,
    #[error("the landmarks (nearly) coincide")]
    Coincident,
    #[error("the landmarks are (nearly) collinear")]
    Collinear,
}

/// Spread of a point set: RMS distance from the centroid, and the ratio of
/// the smaller to the larger principal axis (0 for collinear points).
fn spread(points: &[[f64; 2]]) -> (f64, f64) {
    let n = points.len() as f64;
    let cx = points.iter().map(|p| p[0]).sum::<f64>() / n;
    let cy = points.iter().map(|p| p[1]).sum::<f64>() / n;
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for p in points {
        let (dx, dy) = (p[0] - cx, p[1] - cy);
        sxx += dx * dx / n;
        syy += dy * dy / n;
        sxy += dx * dy / n;
    }
    let trace = sxx + syy;
    let gap = ((sxx - syy).powi(2) + 4.0 * sxy * sxy).sqrt();
    let (large, small) = ((trace + gap) / 2.0, ((trace - gap) / 2.0).max(0.0));
    let aspect = if large > 0.0 { (small / large).sqrt() } else { 0.0 };
    (trace.sqrt(), aspect)
}

/// Turns 5 landmarks into the warp map of an aligned face, or rejects them.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceAligner {
    template: [[f64; 2]; 5],
    /// Output side S of the aligned face.
    pub size: usize,
    margin: f32,
    min_spread: f64,
    min_aspect: f64,
}

impl FaceAligner {
    /// `template`: the 5 target points in output pixels; `margin`: how far a
    /// landmark may lie outside the image, as a fraction of the image's width
    /// (x) or height (y); `min_spread`: least RMS distance of the landmarks
    /// from their centroid, in image pixels; `min_aspect`: least ratio of the
    /// landmarks' minor to major principal axis (0 = collinear, 1 = round).
    pub fn new(
        template: [[f32; 2]; 5],
        size: usize,
        margin: f32,
        min_spread: f32,
        min_aspect: f32,
    ) -> Result<Self, CropError> {
        if size == 0 || size.checked_mul(size).and_then(|n| n.checked_mul(3)).is_none() {
            return Err(CropError::InvalidCropSize(size));
        }
        let template = template.map(|p| p.map(f64::from));
        let finite = template.iter().flatten().all(|v| v.is_finite());
        let (t_spread, t_aspect) = spread(&template);
        if !finite || t_spread <= 0.0 || t_aspect < 0.1 {
            return Err(CropError::InvalidFaceTemplate(
                "points must be finite and span a 2-D shape (not coincident or collinear)".into(),
            ));
        }
        let check = |name: &'static str, value: f32, ok: bool| match ok {
            true => Ok(()),
            false => Err(CropError::InvalidFaceParameter { name, value }),
        };
        check("landmark_margin", margin, margin.is_finite() && margin >= 0.0)?;
        check("min_landmark_spread", min_spread, min_spread.is_finite() && min_spread > 0.0)?;
        check("min_landmark_aspect", min_aspect, (0.0..1.0).contains(&min_aspect))?;
        Ok(Self { template, size, margin, min_spread: f64::from(min_spread), min_aspect: f64::from(min_aspect) })
    }

    /// Floats in one aligned face: `3 * size * size`.
    pub fn face_len(&self) -> usize {
        3 * self.size * self.size
    }

    /// The similarity from `landmarks` (image pixels of a `width x height`
    /// image) to the template, after checking that the landmarks can define
    /// one.
    pub fn transform(
        &self,
        landmarks: [[f32; 2]; 5],
        width: usize,
        height: usize,
    ) -> Result<Similarity, LandmarkRejection> {
        if !landmarks.iter().flatten().all(|v| v.is_finite()) {
            return Err(LandmarkRejection::NonFinite);
        }
        let (w, h) = (width as f32, height as f32);
        let (mx, my) = (self.margin * w, self.margin * h);
        let inside = |[x, y]: [f32; 2]| -mx <= x && x <= w + mx && -my <= y && y <= h + my;
        if !landmarks.iter().all(|&p| inside(p)) {
            return Err(LandmarkRejection::OutsideImage);
        }
        let points = landmarks.map(|p| p.map(f64::from));
        let (rms, aspect) = spread(&points);
        if rms < self.min_spread {
            return Err(LandmarkRejection::Coincident);
        }
        if aspect < self.min_aspect {
            return Err(LandmarkRejection::Collinear);
        }
        estimate_similarity(&points, &self.template).ok_or(LandmarkRejection::Coincident)
    }

    /// The warp map (see [`Similarity::inverse_map`]) for `landmarks`.
    pub fn plan(&self, landmarks: [[f32; 2]; 5], width: usize, height: usize) -> Result<[f32; 6], LandmarkRejection> {
        self.transform(landmarks, width, height)?.inverse_map().ok_or(LandmarkRejection::Coincident)
    }
}

/// One face of a batch: the image it reads and its warp map.
#[derive(Debug, Clone, Copy)]
pub struct FaceJob<'a> {
    pub image: ImageView<'a>,
    pub map: [f32; 6],
}

/// Warps one face into `out` (`[3, size, size]` CHW, `(v - 127.5) / 127.5`).
///
/// Same arithmetic, in the same order, as [`reference::face_warp`](crate::reference::face_warp);
/// faster only because interior samples skip the per-neighbour border tests.
///
/// # Panics
/// If `out.len() != 3 * size * size`.
pub fn warp_face_into(image: &ImageView, map: &[f32; 6], size: usize, out: &mut [f32]) {
    let plane = size * size;
    assert_eq!(out.len(), 3 * plane, "output buffer is not one face");
    let (w, h) = (image.width(), image.height());
    let data = image.data();
    let [m0, m1, m2, m3, m4, m5] = *map;
    for v_out in 0..size {
        let v = v_out as f32;
        for u_out in 0..size {
            let u = u_out as f32;
            let x = m0 * u + m1 * v + m2;
            let y = m3 * u + m4 * v + m5;
            let mut acc = [0.0f32; 3];
            if x > -1.0 && x < w as f32 && y > -1.0 && y < h as f32 {
                let (fx0, fy0) = (x.floor(), y.floor());
                let (lx, ly) = (x - fx0, y - fy0);
                let (x0, y0) = (fx0 as isize, fy0 as isize);
                let weights = [(1.0 - ly) * (1.0 - lx), (1.0 - ly) * lx, ly * (1.0 - lx), ly * lx];
                if x0 >= 0 && y0 >= 0 && (x0 as usize) + 1 < w && (y0 as usize) + 1 < h {
                    let top = (y0 as usize * w + x0 as usize) * 3;
                    let taps = [top, top + 3, top + w * 3, top + w * 3 + 3];
                    for (&at, &weight) in taps.iter().zip(&weights) {
                        for (c, a) in acc.iter_mut().enumerate() {
                            *a += weight * f32::from(data[at + c]);
                        }
                    }
                } else {
                    for (k, &weight) in weights.iter().enumerate() {
                        let (yy, xx) = (y0 + (k >> 1) as isize, x0 + (k & 1) as isize);
                        if yy < 0 || xx < 0 || yy as usize >= h || xx as usize >= w {
                            continue;
                        }
                        let at = (yy as usize * w + xx as usize) * 3;
                        for (c, a) in acc.iter_mut().enumerate() {
                            *a += weight * f32::from(data[at + c]);
                        }
                    }
                }
            }
            for (c, a) in acc.iter().enumerate() {
                out[c * plane + v_out * size + u_out] = (a - 127.5) / 127.5;
            }
        }
    }
}

/// An aligned face as [`warp_face_into`] writes it (`[3, size, size]` CHW, `(v - 127.5) /
/// 127.5`) back to 8-bit RGB pixels, HWC, each value `v * 127.5 + 127.5` rounded and
/// clamped to 0..=255: the picture the encoder was given.
///
/// # Panics
/// If `face.len() != 3 * size * size`.
pub fn face_to_rgb8(face: &[f32], size: usize) -> Vec<u8> {
    let plane = size * size;
    assert_eq!(face.len(), 3 * plane, "input buffer is not one face");
    let to_u8 = |v: f32| (v * 127.5 + 127.5).round().clamp(0.0, 255.0) as u8;
    (0..plane).flat_map(|p| (0..3).map(move |c| to_u8(face[c * plane + p]))).collect()
}

/// Warps every face of a batch into `out` (`[N, 3, size, size]`), faces
/// spread over the rayon pool.
///
/// # Panics
/// If `out.len() != jobs.len() * 3 * size * size`.
pub fn warp_all(jobs: &[FaceJob], size: usize, out: &mut [f32]) {
    let face_len = 3 * size * size;
    assert_eq!(out.len(), jobs.len() * face_len, "output buffer does not hold one face per job");
    if face_len == 0 {
        return;
    }
    out.par_chunks_mut(face_len)
        .zip(jobs.par_iter())
        .for_each(|(face, job)| warp_face_into(&job.image, &job.map, size, face));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;

    fn aligner() -> FaceAligner {
        FaceAligner::new(ARCFACE_TEMPLATE_112, 112, 0.1, 1.0, 0.05).unwrap()
    }

    fn template_f64() -> Vec<[f64; 2]> {
        ARCFACE_TEMPLATE_112.iter().map(|p| p.map(f64::from)).collect()
    }

    #[test]
    fn recovers_a_known_similarity_exactly() {
        let truth = Similarity { a: 1.7 * 0.4f64.cos(), b: 1.7 * 0.4f64.sin(), tx: -31.0, ty: 12.5 };
        let dst = template_f64();
        let src: Vec<[f64; 2]> = dst.iter().map(|&p| truth.apply(p)).collect();
        let found = estimate_similarity(&dst, &src).unwrap();
        for (got, want) in [(found.a, truth.a), (found.b, truth.b), (found.tx, truth.tx), (found.ty, truth.ty)] {
            assert!((got - want).abs() < 1e-9, "{found:?} vs {truth:?}");
        }
    }

    #[test]
    fn aligner_maps_landmarks_onto_the_template() {
        // Landmarks = template rotated by 30 degrees, scaled 2.5x, shifted: the
        // inverse map takes each template point back to its landmark.
        let truth = Similarity {
            a: 2.5 * std::f64::consts::FRAC_PI_6.cos(),
            b: 2.5 * std::f64::consts::FRAC_PI_6.sin(),
            tx: 300.0,
            ty: 40.0,
        };
        let landmarks = ARCFACE_TEMPLATE_112.map(|p| truth.apply(p.map(f64::from)).map(|v| v as f32));
        let m = aligner().plan(landmarks, 640, 480).unwrap();
        for (t, l) in ARCFACE_TEMPLATE_112.iter().zip(&landmarks) {
            let x = m[0] * t[0] + m[1] * t[1] + m[2];
            let y = m[3] * t[0] + m[4] * t[1] + m[5];
            assert!((x - l[0]).abs() < 1e-3 && (y - l[1]).abs() < 1e-3, "{x},{y} vs {l:?}");
        }
    }

    #[test]
    fn least_squares_beats_any_perturbation() {
        // Noisy landmarks: the estimate's squared error is a minimum.
        let noisy: Vec<[f64; 2]> = template_f64()
            .iter()
            .zip([[1.0, -2.0], [0.5, 1.5], [-1.0, 0.0], [2.0, 1.0], [-0.5, -1.0]])
            .map(|(p, n)| [p[0] * 1.3 + 20.0 + n[0], p[1] * 1.3 - 5.0 + n[1]])
            .collect();
        let dst = template_f64();
        let fit = estimate_similarity(&noisy, &dst).unwrap();
        let error = |s: &Similarity| {
            noisy
                .iter()
                .zip(&dst)
                .map(|(p, q)| {
                    let r = s.apply(*p);
                    (r[0] - q[0]).powi(2) + (r[1] - q[1]).powi(2)
                })
                .sum::<f64>()
        };
        let best = error(&fit);
        for d in [[1e-3, 0.0, 0.0, 0.0], [0.0, 1e-3, 0.0, 0.0], [0.0, 0.0, 1e-2, 0.0], [0.0, 0.0, 0.0, -1e-2]] {
            let moved = Similarity { a: fit.a + d[0], b: fit.b + d[1], tx: fit.tx + d[2], ty: fit.ty + d[3] };
            assert!(error(&moved) > best);
        }
    }

    #[test]
    fn mirrored_landmarks_give_a_rotation_not_a_reflection() {
        let mirrored: Vec<[f64; 2]> = template_f64().iter().map(|p| [112.0 - p[0], p[1]]).collect();
        let fit = estimate_similarity(&mirrored, &template_f64()).unwrap();
        assert!(fit.a.is_finite() && fit.b.is_finite() && fit.a.hypot(fit.b) > 0.0);
    }

    #[test]
    fn rejects_degenerate_landmarks() {
        let a = aligner();
        let good = ARCFACE_TEMPLATE_112.map(|p| [p[0] + 100.0, p[1] + 100.0]);
        assert!(a.plan(good, 640, 480).is_ok());
        let mut nan = good;
        nan[2][1] = f32::NAN;
        assert_eq!(a.plan(nan, 640, 480), Err(LandmarkRejection::NonFinite));
        let mut inf = good;
        inf[0][0] = f32::INFINITY;
        assert_eq!(a.plan(inf, 640, 480), Err(LandmarkRejection::NonFinite));
        assert_eq!(a.plan([[50.0, 60.0]; 5], 640, 480), Err(LandmarkRejection::Coincident));
        let line = [[10.0, 10.0], [20.0, 20.0], [30.0, 30.0], [40.0, 40.0], [50.0, 50.0]];
        assert_eq!(a.plan(line, 640, 480), Err(LandmarkRejection::Collinear));
        let nearly_line = [[10.0, 10.0], [20.0, 20.1], [30.0, 30.0], [40.0, 40.1], [50.0, 50.0]];
        assert_eq!(a.plan(nearly_line, 640, 480), Err(LandmarkRejection::Collinear));
        let far = good.map(|p| [p[0] + 2000.0, p[1]]);
        assert_eq!(a.plan(far, 640, 480), Err(LandmarkRejection::OutsideImage));
        // Within the 10% margin (64 px of a 640-wide image) is still a face.
        let edge = good.map(|p| [p[0] - 150.0, p[1]]);
        assert!(edge.iter().any(|p| p[0] < 0.0));
        assert!(a.plan(edge, 640, 480).is_ok());
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(matches!(
            FaceAligner::new([[1.0, 1.0]; 5], 112, 0.1, 1.0, 0.05),
            Err(CropError::InvalidFaceTemplate(_))
        ));
        assert!(FaceAligner::new(ARCFACE_TEMPLATE_112, 0, 0.1, 1.0, 0.05).is_err());
        for (margin, spread, aspect) in [(-0.1, 1.0, 0.05), (0.1, 0.0, 0.05), (0.1, 1.0, 1.0), (f32::NAN, 1.0, 0.05)] {
            assert!(matches!(
                FaceAligner::new(ARCFACE_TEMPLATE_112, 112, margin, spread, aspect),
                Err(CropError::InvalidFaceParameter { .. })
            ));
        }
    }

    fn test_image(w: usize, h: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..w * h * 3)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn warp_equals_the_reference() {
        let (w, h) = (97, 61);
        let pixels = test_image(w, h);
        let image = ImageView::new(&pixels, w, h).unwrap();
        let maps = [
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            [0.7, -0.3, 20.5, 0.3, 0.7, -10.25],
            [0.4, 0.1, -30.0, -0.1, 0.4, 50.0],
            [2.0, 0.5, 60.0, -0.5, 2.0, 10.0],
            [f32::NAN, 0.0, 0.0, 0.0, 1.0, 0.0],
        ];
        for size in [112, 7] {
            for m in maps {
                let mut fast = vec![0.0; 3 * size * size];
                warp_face_into(&image, &m, size, &mut fast);
                let slow = reference::face_warp(&image, &m, size);
                assert_eq!(fast, slow, "map {m:?} size {size}");
            }
        }
        let jobs: Vec<FaceJob> = maps.iter().map(|&map| FaceJob { image, map }).collect();
        let mut all = vec![0.0; jobs.len() * 3 * 7 * 7];
        warp_all(&jobs, 7, &mut all);
        for (k, m) in maps.iter().enumerate() {
            assert_eq!(all[k * 147..(k + 1) * 147], reference::face_warp(&image, m, 7)[..]);
        }
    }

    #[test]
    fn rgb8_undoes_the_normalisation() {
        // 2x2 face, CHW: red plane, green plane, blue plane.
        let face = [
            -1.0,
            1.0,
            0.0,
            2.0, // R: 0, 255, 127.5 -> 128, above range -> 255
            -3.0,
            f32::NAN,
            0.5,
            -0.999, // G: below range -> 0, NaN -> 0, 191.25, 0.1275
            0.2,
            0.2,
            0.2,
            0.2, // B: 153
        ];
        assert_eq!(face_to_rgb8(&face, 2), vec![0, 0, 153, 255, 0, 153, 128, 191, 153, 255, 0, 153]);
        // A warped photo comes back exactly: the warp's interior samples of an identity map
        // are the pixels themselves.
        let (w, h) = (6, 6);
        let pixels = test_image(w, h);
        let image = ImageView::new(&pixels, w, h).unwrap();
        let mut warped = vec![0.0; 3 * w * h];
        warp_face_into(&image, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], w, &mut warped);
        assert_eq!(face_to_rgb8(&warped, w), pixels);
    }

    #[test]
    fn identity_warp_copies_pixels_and_pads_with_minus_one() {
        let (w, h) = (5, 4);
        let pixels = test_image(w, h);
        let image = ImageView::new(&pixels, w, h).unwrap();
        let size = 6;
        let mut out = vec![0.0; 3 * size * size];
        warp_face_into(&image, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], size, &mut out);
        for c in 0..3 {
            for v in 0..size {
                for u in 0..size {
                    let want = if u < w && v < h { f32::from(pixels[(v * w + u) * 3 + c]) } else { 0.0 };
                    assert_eq!(out[c * 36 + v * size + u], (want - 127.5) / 127.5);
                }
            }
        }
    }
}
