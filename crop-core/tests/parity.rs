//! Fast ROI-align ([`RoiAlign::crop_into`], [`crop_all`]) against
//! [`reference::roi_align`] on random images, boxes and policies.

use crop_core::{crop_all, plan_crop, reference, CropJob, CropPolicy, CropRegion, ImageView, Letterbox, RoiAlign};

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

/// Boxes in original pixels: inside, touching each edge, over the edges,
/// whole-image, thin, and tiny ones.
fn random_boxes(rng: &mut Rng, w: f32, h: f32, n: usize) -> Vec<[f32; 4]> {
    let mut boxes = vec![
        [0.0, 0.0, w, h],
        [-0.3 * w, -0.2 * h, 0.6 * w, 0.7 * h],
        [0.5 * w, 0.4 * h, 1.4 * w, 1.3 * h],
        [0.0, 0.5 * h, 0.3 * w, h],
        [0.2 * w, 0.0, w, 0.1 * h + 1.0],
    ];
    while boxes.len() < n {
        let x1 = rng.range(-0.3 * w, w);
        let y1 = rng.range(-0.3 * h, h);
        let x2 = x1 + rng.range(0.5, 1.3 * w);
        let y2 = y1 + rng.range(0.5, 1.3 * h);
        boxes.push([x1, y1, x2, y2]);
    }
    boxes
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn fast_matches_reference() {
    let mut rng = Rng(0x5EED);
    let policies = [CropPolicy::Stretch, CropPolicy::Pad, CropPolicy::Context { scale: 1.6 }];
    // Boxes arrive in letterbox pixels; a non-trivial transform exercises the mapping too.
    let letterbox = Letterbox::new(0.75, 3.0, 11.5).unwrap();
    let mut checked = 0;
    let mut nonzero = 0;
    for (w, h) in [(1usize, 1usize), (7, 5), (2, 9), (333, 217)] {
        let data = rng.bytes(w * h * 3);
        let image = ImageView::new(&data, w, h).unwrap();
        for b in random_boxes(&mut rng, w as f32, h as f32, 12) {
            let b_lb = letterbox.to_letterbox(b);
            for policy in policies {
                let Ok(region) = plan_crop(b_lb, &letterbox, w, h, policy, 0.5) else {
                    continue;
                };
                for s in [1, 2, 3] {
                    for size in [1, 7, 64] {
                        let align = RoiAlign::new(size, s).unwrap();
                        let want = reference::roi_align(&image, &region, size, s);
                        let mut got = vec![f32::NAN; align.crop_len()];
                        align.crop_into(&image, &region, &mut got);
                        let diff = max_abs_diff(&got, &want);
                        assert!(diff <= 1e-5, "{w}x{h} {policy:?} {region:?} S={size} s={s}: max diff {diff}");
                        checked += 1;
                        nonzero += usize::from(want.iter().any(|&v| v > 0.0));
                    }
                }
            }
        }
    }
    // Guard against a vacuous pass (every box rejected, or all-zero crops).
    assert!(checked >= 300, "only {checked} cases checked");
    assert!(nonzero * 10 >= checked * 9, "{nonzero} of {checked} crops are non-zero");
}

#[test]
fn fast_matches_reference_on_hand_made_regions() {
    // Regions plan_crop never makes: far outside, inverted, a mask off the ROI.
    let mut rng = Rng(7);
    let (w, h) = (13, 8);
    let data = rng.bytes(w * h * 3);
    let image = ImageView::new(&data, w, h).unwrap();
    let regions = [
        CropRegion { roi: [-50.0, -50.0, -20.0, -20.0], mask: None },
        CropRegion { roi: [20.0, 2.0, 60.0, 9.0], mask: None },
        CropRegion { roi: [10.0, 6.0, 2.0, 1.0], mask: None },
        CropRegion { roi: [-2.0, -1.0, 15.0, 9.0], mask: Some([3.0, 2.0, 3.5, 7.0]) },
        CropRegion { roi: [0.0, 0.0, 13.0, 8.0], mask: Some([20.0, 20.0, 30.0, 30.0]) },
        CropRegion { roi: [4.0, 4.0, 4.0, 4.0], mask: None },
        // With S = 18 and s = 1, samples land exactly on -1 and on W, H (kept)
        // and on -2, W + 1, H + 1 (dropped).
        CropRegion { roi: [-2.0, -2.0, 16.0, 16.0], mask: None },
    ];
    for region in regions {
        for s in [1, 2, 3] {
            for size in [1, 7, 18, 64] {
                let align = RoiAlign::new(size, s).unwrap();
                let want = reference::roi_align(&image, &region, size, s);
                let mut got = vec![f32::NAN; align.crop_len()];
                align.crop_into(&image, &region, &mut got);
                let diff = max_abs_diff(&got, &want);
                assert!(diff <= 1e-5, "{region:?} S={size} s={s}: max diff {diff}");
            }
        }
    }
}

#[test]
fn crop_all_equals_crop_into_per_job() {
    let mut rng = Rng(42);
    let a = rng.bytes(333 * 217 * 3);
    let b = rng.bytes(64 * 100 * 3);
    let images = [ImageView::new(&a, 333, 217).unwrap(), ImageView::new(&b, 64, 100).unwrap()];
    let align = RoiAlign::new(32, 2).unwrap();
    let policies = [CropPolicy::Stretch, CropPolicy::Pad, CropPolicy::Context { scale: 1.25 }];
    let identity = Letterbox::new(1.0, 0.0, 0.0).unwrap();
    let mut jobs = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let (w, h) = (image.width(), image.height());
        for (k, b) in random_boxes(&mut rng, w as f32, h as f32, 9).into_iter().enumerate() {
            if let Ok(region) = plan_crop(b, &identity, w, h, policies[(i + k) % 3], 1.0) {
                jobs.push(CropJob { image: *image, region });
            }
        }
    }
    assert!(jobs.len() >= 12, "only {} jobs", jobs.len());
    let mut batch = vec![f32::NAN; jobs.len() * align.crop_len()];
    crop_all(&align, &jobs, &mut batch);
    for (job, got) in jobs.iter().zip(batch.chunks(align.crop_len())) {
        let mut want = vec![0.0; align.crop_len()];
        align.crop_into(&job.image, &job.region, &mut want);
        assert_eq!(got, &want[..], "{:?}", job.region);
    }
    crop_all(&align, &[], &mut []);
}
