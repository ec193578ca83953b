//! GPU kernels against host references: ROI-align against
//! `crop_core::reference::roi_align` for every crop policy, odd image sizes,
//! edge-touching boxes, sampling ratios 1 and 2 and crop sizes 7 and 256 (one
//! launch per configuration over crops from all images, packed at unaligned
//! offsets); the face warp against `crop_core::reference::face_warp`; and the
//! kernels' bounds checks.
//!
//! On machines without an NVIDIA driver or GPU each test is a counted GPU skip
//! (`test_skip::no_gpu`) and returns. On a GPU machine NVRTC must be found (see
//! `scripts/setup_nvrtc.sh`), or the tests fail.

use std::sync::Arc;

use crop_core::{plan_crop, reference, CropPolicy, CropRegion, ImageView, Letterbox};
use cuda_kernels::cudarc::driver::CudaStream;
use cuda_kernels::{cuda_context, CropDesc, FaceDesc, KernelError, KernelSet, RoiAlignParams};

const TOLERANCE: f32 = 1e-4;

struct Gpu {
    stream: Arc<CudaStream>,
    kernels: KernelSet,
}

/// The GPU, or `None` after reporting the skip.
fn gpu(test: &str) -> Option<Gpu> {
    let ctx = match cuda_context(0) {
        Ok(ctx) => ctx,
        Err(e) => {
            test_skip::no_gpu(test, &format!("no usable CUDA device: {e}"));
            return None;
        }
    };
    let kernels = KernelSet::compile(&ctx).unwrap_or_else(|e| panic!("{test}: {e}"));
    let stream = ctx.new_stream().expect("a stream");
    Some(Gpu { stream, kernels })
}

#[path = "../../crop-core/tests/support/rng.rs"]
mod rng;
use rng::Rng;

/// Several images of different sizes in one buffer, each starting at an odd
/// offset so that no image is aligned.
struct Packed {
    bytes: Vec<u8>,
    images: Vec<(u64, usize, usize)>,
}

impl Packed {
    fn new(rng: &mut Rng, sizes: &[(usize, usize)]) -> Self {
        let mut bytes = Vec::new();
        let mut images = Vec::new();
        for &(w, h) in sizes {
            bytes.extend(rng.bytes(3));
            images.push((bytes.len() as u64, w, h));
            bytes.extend(rng.bytes(w * h * 3));
        }
        Self { bytes, images }
    }

    /// Plans `box_sets[i]` (original pixels) on image i under `policy`: the surviving crops as
    /// (image, region) and their kernel descriptors, in the same order.
    fn plan(&self, box_sets: &[Vec<[f32; 4]>], policy: CropPolicy) -> (Vec<(usize, CropRegion)>, Vec<CropDesc>) {
        let identity = Letterbox::new(1.0, 0.0, 0.0).expect("identity letterbox");
        let mut crops = Vec::new();
        for (index, &(_, w, h)) in self.images.iter().enumerate() {
            for &b in &box_sets[index] {
                if let Ok(region) = plan_crop(b, &identity, w, h, policy, 0.0) {
                    crops.push((index, region));
                }
            }
        }
        let descs = crops
            .iter()
            .map(|&(index, region)| {
                let (offset, w, h) = self.images[index];
                CropDesc::new(offset, w as u32, h as u32, region.roi, region.mask)
            })
            .collect();
        (crops, descs)
    }

    fn view(&self, index: usize) -> ImageView<'_> {
        let (offset, w, h) = self.images[index];
        let start = offset as usize;
        ImageView::new(&self.bytes[start..start + w * h * 3], w, h).expect("a packed image")
    }
}

const IMAGE_SIZES: [(usize, usize); 4] = [(1, 1), (7, 5), (333, 217), (640, 480)];

/// Boxes in image pixels: the whole image, boxes touching each edge, a thin
/// one, ones over the edges (clamped by `plan_crop`) and random ones.
fn boxes(rng: &mut Rng, w: f32, h: f32) -> Vec<[f32; 4]> {
    let mut boxes = vec![
        [0.0, 0.0, w, h],
        [0.0, 0.0, 0.4 * w, 0.6 * h],
        [0.55 * w, 0.3 * h, w, h],
        [0.1 * w, 0.45 * h, 0.9 * w, 0.55 * h + 0.5],
        [-0.2 * w, 0.2 * h, 0.3 * w, 1.3 * h],
        [0.7 * w, -0.5 * h, 1.5 * w, 0.2 * h],
    ];
    for _ in 0..3 {
        let x1 = rng.range(-0.1 * w, 0.9 * w);
        let y1 = rng.range(-0.1 * h, 0.9 * h);
        boxes.push([x1, y1, x1 + rng.range(0.05, 0.6) * w, y1 + rng.range(0.05, 0.6) * h]);
    }
    boxes
}

#[test]
fn roi_align_matches_reference() {
    let Some(gpu) = gpu("roi_align_matches_reference") else {
        return;
    };
    let mut rng = Rng(7);
    let packed = Packed::new(&mut rng, &IMAGE_SIZES);
    let images = gpu.stream.clone_htod(&packed.bytes).expect("upload images");
    let box_sets: Vec<Vec<[f32; 4]>> =
        packed.images.iter().map(|&(_, w, h)| boxes(&mut rng, w as f32, h as f32)).collect();
    let policies =
        [("stretch", CropPolicy::Stretch), ("pad", CropPolicy::Pad), ("context", CropPolicy::Context { scale: 1.5 })];
    let mut worst = 0.0f32;
    for (policy_name, policy) in policies {
        for crop_size in [7u32, 256] {
            for sampling_ratio in [1u32, 2] {
                let (crops, descs) = packed.plan(&box_sets, policy);
                let descs_dev = gpu.stream.clone_htod(&descs).expect("upload descriptors");
                let crop_len = 3 * (crop_size * crop_size) as usize;
                let mut out = gpu.stream.alloc_zeros::<f32>(crops.len() * crop_len).expect("output");
                let params = RoiAlignParams { crop_size, sampling_ratio };
                gpu.kernels.launch_roi_align(&gpu.stream, &images, &descs_dev, params, &mut out).expect("launch");
                let got = gpu.stream.clone_dtoh(&out).expect("download");
                let mut per_image = vec![(0usize, 0.0f32); IMAGE_SIZES.len()];
                for (k, &(index, region)) in crops.iter().enumerate() {
                    let want =
                        reference::roi_align(&packed.view(index), &region, crop_size as usize, sampling_ratio as usize);
                    let diff = max_abs_diff(&got[k * crop_len..(k + 1) * crop_len], &want);
                    per_image[index].0 += 1;
                    per_image[index].1 = per_image[index].1.max(diff);
                }
                for (index, (count, diff)) in per_image.into_iter().enumerate() {
                    let (w, h) = IMAGE_SIZES[index];
                    println!(
                        "roi_align f32 policy={policy_name} S={crop_size} s={sampling_ratio} \
                         image={w}x{h} crops={count} max_abs_diff={diff:.3e}"
                    );
                    assert!(diff <= TOLERANCE, "{policy_name} S={crop_size} s={sampling_ratio} {w}x{h}: {diff}");
                    worst = worst.max(diff);
                }
            }
        }
    }
    println!("roi_align f32 worst max_abs_diff={worst:.3e}");
}

#[test]
fn roi_align_f16_matches_reference() {
    let Some(gpu) = gpu("roi_align_f16_matches_reference") else {
        return;
    };
    let mut rng = Rng(11);
    let packed = Packed::new(&mut rng, &IMAGE_SIZES);
    let images = gpu.stream.clone_htod(&packed.bytes).expect("upload images");
    let box_sets: Vec<_> = packed.images.iter().map(|&(_, w, h)| boxes(&mut rng, w as f32, h as f32)).collect();
    let (crops, descs) = packed.plan(&box_sets, CropPolicy::Pad);
    let descs_dev = gpu.stream.clone_htod(&descs).expect("upload descriptors");
    let crop_size = 64u32;
    let crop_len = 3 * (crop_size * crop_size) as usize;
    let mut out = gpu.stream.alloc_zeros::<half::f16>(crops.len() * crop_len).expect("output");
    let params = RoiAlignParams { crop_size, sampling_ratio: 2 };
    gpu.kernels.launch_roi_align(&gpu.stream, &images, &descs_dev, params, &mut out).expect("launch");
    let got: Vec<f32> = gpu.stream.clone_dtoh(&out).expect("download").into_iter().map(f32::from).collect();
    let mut worst = 0.0f32;
    for (k, &(index, region)) in crops.iter().enumerate() {
        let want = reference::roi_align(&packed.view(index), &region, crop_size as usize, 2);
        worst = worst.max(max_abs_diff(&got[k * crop_len..(k + 1) * crop_len], &want));
    }
    println!("roi_align f16 policy=pad S=64 s=2 crops={} max_abs_diff={worst:.3e}", crops.len());
    // Half of FP16's spacing just below 1.0 (2^-11), plus the f32 tolerance.
    assert!(worst <= 2.5e-4 + TOLERANCE, "{worst}");
}

#[test]
fn kernels_check_bounds() {
    let Some(gpu) = gpu("kernels_check_bounds") else {
        return;
    };
    let pixels = vec![200u8; 4 * 4 * 3];
    let images = gpu.stream.clone_htod(&pixels).expect("upload");
    let good = CropDesc::new(0, 4, 4, [0.0, 0.0, 4.0, 4.0], None);
    // One byte short of fitting in the 48-byte buffer, and far outside it.
    let short = CropDesc::new(1, 4, 4, [0.0, 0.0, 4.0, 4.0], None);
    let outside = CropDesc::new(u64::MAX - 10, 4, 4, [0.0, 0.0, 4.0, 4.0], None);
    let descs = gpu.stream.clone_htod(&[good, short, outside]).expect("upload");
    let params = RoiAlignParams { crop_size: 2, sampling_ratio: 1 };
    // 3 crops of 12 values plus a tail that no store may touch.
    let sentinel = 7.0f32;
    let mut out = gpu.stream.clone_htod(&[sentinel; 3 * 12 + 5]).expect("upload");
    gpu.kernels.launch_roi_align(&gpu.stream, &images, &descs, params, &mut out).expect("launch");
    let got = gpu.stream.clone_dtoh(&out).expect("download");
    assert!(got[..12].iter().all(|&v| (v - 200.0 / 255.0).abs() < 1e-6), "{:?}", &got[..12]);
    assert!(got[12..36].iter().all(|v| v.is_nan()), "{:?}", &got[12..36]);
    assert!(got[36..].iter().all(|&v| v == sentinel), "{:?}", &got[36..]);

    let mut small = gpu.stream.alloc_zeros::<f32>(3 * 12 - 1).expect("alloc");
    let err =
        gpu.kernels.launch_roi_align(&gpu.stream, &images, &descs, params, &mut small).expect_err("output too small");
    assert!(matches!(err, KernelError::BufferTooSmall { needed: 36, .. }), "{err}");

    let faces = gpu
        .stream
        .clone_htod(&[FaceDesc { image_offset: 40, width: 4, height: 4, inverse: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0] }])
        .expect("upload");
    let mut face_out = gpu.stream.clone_htod(&[sentinel; 3 * 4 + 2]).expect("upload");
    gpu.kernels.launch_face_warp(&gpu.stream, &images, &faces, 2, &mut face_out).expect("launch");
    let got = gpu.stream.clone_dtoh(&face_out).expect("download");
    assert!(got[..12].iter().all(|v| v.is_nan()), "{got:?}");
    assert!(got[12..].iter().all(|&v| v == sentinel), "{got:?}");
    println!("kernels_check_bounds: bad descriptors gave NaN, no store past the crops");
}

#[test]
fn crops_past_the_grid_limit() {
    let Some(gpu) = gpu("crops_past_the_grid_limit") else {
        return;
    };
    // More crops than the 65,535 blocks of gridDim.y: the kernel strides.
    let mut rng = Rng(17);
    let (w, h) = (5usize, 3usize);
    let pixels = rng.bytes(w * h * 3);
    let image = ImageView::new(&pixels, w, h).expect("image");
    let images = gpu.stream.clone_htod(&pixels).expect("upload");
    let regions: Vec<CropRegion> = (0..70_000)
        .map(|i| {
            let x1 = (i % 4) as f32 * 0.75;
            let y1 = (i / 4 % 3) as f32 * 0.5;
            CropRegion { roi: [x1, y1, x1 + 1.0 + (i % 7) as f32 * 0.5, y1 + 1.5], mask: None }
        })
        .collect();
    let descs: Vec<CropDesc> = regions.iter().map(|r| CropDesc::new(0, w as u32, h as u32, r.roi, None)).collect();
    let descs = gpu.stream.clone_htod(&descs).expect("upload");
    let mut out = gpu.stream.alloc_zeros::<f32>(regions.len() * 12).expect("output");
    let params = RoiAlignParams { crop_size: 2, sampling_ratio: 2 };
    gpu.kernels.launch_roi_align(&gpu.stream, &images, &descs, params, &mut out).expect("launch");
    let got = gpu.stream.clone_dtoh(&out).expect("download");
    let worst = regions
        .iter()
        .enumerate()
        .map(|(k, r)| max_abs_diff(&got[k * 12..(k + 1) * 12], &reference::roi_align(&image, r, 2, 2)))
        .fold(0.0, f32::max);
    println!("crops_past_the_grid_limit crops={} max_abs_diff={worst:.3e}", regions.len());
    assert!(worst <= TOLERANCE, "{worst}");
}

/// Inverse map of a similarity: output `(u, v)` -> source, rotating by
/// `angle` and scaling by `scale` about output centre -> source `(cx, cy)`.
fn similarity(scale: f32, angle: f32, size: usize, cx: f32, cy: f32) -> [f32; 6] {
    let (a, b) = (scale * angle.cos(), scale * angle.sin());
    let half = (size as f32 - 1.0) / 2.0;
    [a, -b, cx - a * half + b * half, b, a, cy - b * half - a * half]
}

#[test]
fn face_warp_matches_reference() {
    let Some(gpu) = gpu("face_warp_matches_reference") else {
        return;
    };
    let mut rng = Rng(13);
    let packed = Packed::new(&mut rng, &IMAGE_SIZES);
    let images = gpu.stream.clone_htod(&packed.bytes).expect("upload images");
    for size in [112usize, 7] {
        let mut faces = Vec::new();
        for (index, &(_, w, h)) in packed.images.iter().enumerate() {
            let (wf, hf) = (w as f32, h as f32);
            let transforms = [
                ("identity", [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
                ("shifted-out", [1.0, 0.0, -0.3 * wf, 0.0, 1.0, -0.2 * hf]),
                ("rotated", similarity(wf.min(hf) / size as f32 * 0.8, 0.5, size, wf / 2.0, hf / 2.0)),
                ("upsampled", similarity(0.3, -0.2, size, wf * 0.7, hf * 0.3)),
                ("corner", similarity(1.3, 2.0, size, wf, hf)),
                ("nan", [f32::NAN, 0.0, 0.0, 0.0, 1.0, 0.0]),
            ];
            for (name, m) in transforms {
                faces.push((index, name, m));
            }
        }
        let descs: Vec<FaceDesc> = faces
            .iter()
            .map(|&(index, _, inverse)| {
                let (image_offset, w, h) = packed.images[index];
                FaceDesc { image_offset, width: w as u32, height: h as u32, inverse }
            })
            .collect();
        let descs_dev = gpu.stream.clone_htod(&descs).expect("upload descriptors");
        let face_len = 3 * size * size;
        let mut out = gpu.stream.alloc_zeros::<f32>(faces.len() * face_len).expect("output");
        gpu.kernels.launch_face_warp(&gpu.stream, &images, &descs_dev, size as u32, &mut out).expect("launch");
        let got = gpu.stream.clone_dtoh(&out).expect("download");
        let mut worst = 0.0f32;
        for (k, &(index, name, m)) in faces.iter().enumerate() {
            let image = packed.view(index);
            let want = reference::face_warp(&image, &m, size);
            let diff = max_abs_diff(&got[k * face_len..(k + 1) * face_len], &want);
            assert!(diff <= TOLERANCE, "{name} on {}x{} size {size}: {diff}", image.width(), image.height());
            worst = worst.max(diff);
            if name == "identity" {
                // Pins the reference's convention: pixel centres at integers.
                let (w, h) = (image.width(), image.height());
                for (y, x, c) in [(0, 0, 0), (h.min(size) - 1, w.min(size) - 1, 2)] {
                    let pixel = f32::from(image.data()[(y * w + x) * 3 + c]);
                    let value = want[c * size * size + y * size + x];
                    assert!((value - (pixel - 127.5) / 127.5).abs() < 1e-6);
                }
            }
            if name == "nan" {
                assert!(want.iter().all(|&v| v == -1.0));
            }
        }
        println!("face_warp size={size} faces={} max_abs_diff={worst:.3e}", faces.len());
    }
}

fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| if g.is_nan() || w.is_nan() { f32::INFINITY } else { (g - w).abs() })
        .fold(0.0, f32::max)
}
