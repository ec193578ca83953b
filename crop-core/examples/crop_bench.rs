//! Times the crop stage on a synthetic 640x480 image with 10 boxes:
//! `crop_all` (rayon), sequential `crop_into`, and the reference, in ms per
//! image (median of five rounds). Reads nothing from disk, so it can run under a profiler anywhere.
//!
//! Usage: `crop_bench [iterations] [crop_size] [sampling_ratio] [policy]`
//! (defaults 20 per round, 256, 2, stretch).

use crop_core::{crop_all, plan_crop, reference, CropJob, CropPolicy, ImageView, Letterbox, RoiAlign};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: usize| args.get(i).map_or(default, |a| a.parse().expect("a number"));
    let iterations = arg(0, 20).max(1);
    let align = RoiAlign::new(arg(1, 256), arg(2, 2)).expect("valid crop parameters");
    let policy = CropPolicy::parse(args.get(3).map_or("stretch", String::as_str), 1.25).expect("valid policy");

    let (w, h) = (640usize, 480usize);
    // A smooth gradient with some texture, so no branch sees only zeros.
    let data: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| [(x % 256) as u8, (y % 256) as u8, ((x * 7 + y * 13) % 256) as u8]))
        .collect();
    let image = ImageView::new(&data, w, h).expect("consistent image");
    let letterbox = Letterbox::fit(w as u32, h as u32, 640);
    // Sizes typical of detections: small to half the image, one over an edge.
    let boxes_orig = [
        [10.0, 20.0, 110.0, 220.0],
        [200.0, 50.0, 260.0, 110.0],
        [300.0, 200.0, 620.0, 470.0],
        [50.0, 300.0, 90.0, 330.0],
        [400.0, 10.0, 640.0, 130.0],
        [120.0, 240.0, 330.0, 460.0],
        [500.0, 300.0, 700.0, 520.0],
        [5.0, 5.0, 35.0, 45.0],
        [250.0, 150.0, 450.0, 350.0],
        [580.0, 100.0, 630.0, 400.0],
    ];
    let jobs: Vec<CropJob> = boxes_orig
        .iter()
        .map(|&b| CropJob {
            image,
            region: plan_crop(letterbox.to_letterbox(b), &letterbox, w, h, policy, 1.0).expect("valid box"),
        })
        .collect();
    let mut out = vec![0.0f32; jobs.len() * align.crop_len()];

    // Median of five rounds: shared machines are noisy, and one slow round
    // should not move the number.
    let ms_per_image = |f: &mut dyn FnMut(), n: usize| {
        f(); // warm-up: page faults, rayon pool start
        let mut rounds: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..n {
                    f();
                }
                t.elapsed().as_secs_f64() * 1e3 / n as f64
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        rounds[2]
    };
    let batch = ms_per_image(
        &mut || {
            crop_all(&align, black_box(&jobs), &mut out);
            black_box(&out);
        },
        iterations,
    );
    let single = ms_per_image(
        &mut || {
            for (job, crop) in jobs.iter().zip(out.chunks_mut(align.crop_len())) {
                align.crop_into(black_box(&job.image), &job.region, crop);
            }
            black_box(&out);
        },
        iterations,
    );
    let reference_iters = (iterations / 20).max(1);
    let reference = ms_per_image(
        &mut || {
            for job in &jobs {
                black_box(reference::roi_align(&job.image, &job.region, align.crop_size, align.sampling_ratio));
            }
        },
        reference_iters,
    );
    println!(
        "{} boxes, S={}, s={}, {:?}, {} threads",
        jobs.len(),
        align.crop_size,
        align.sampling_ratio,
        policy,
        rayon::current_num_threads()
    );
    println!("crop_all (rayon):       {batch:8.3} ms/image");
    println!("crop_into (sequential): {single:8.3} ms/image");
    println!("reference:              {reference:8.3} ms/image");
}
