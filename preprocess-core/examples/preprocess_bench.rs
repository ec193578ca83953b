//! Times the preprocess stage per photo on one core: decode alone, then decode + every
//! output, over the JPEGs of a folder (default: the shared COCO subset), median of rounds.
//!
//! Usage: `preprocess_bench [folder] [photos]`

use preprocess_core::{decode, DecodeLimits, PixelBudget, Preprocessor, StageSizes};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let folder = args.first().map_or("../shared/data/coco_val2017_subset/images", String::as_str);
    let count: usize = args.get(1).map_or(40, |a| a.parse().expect("a number"));
    let mut paths: Vec<_> = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("{folder}: {e}"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    paths.sort();
    let photos: Vec<Vec<u8>> = paths.iter().take(count).map(|p| std::fs::read(p).expect("readable photo")).collect();
    let limits = DecodeLimits { max_bytes: 64 << 20, max_pixels: 100_000_000 };
    let stage = Preprocessor {
        sizes: StageSizes { yolo_size: 640, clip_size: 256, pad_value: 114, original_max_side: 1920 },
        limits,
    };
    let time = |label: &str, f: &dyn Fn(&[u8])| {
        let mut rounds: Vec<f64> = (0..5)
            .map(|_| {
                let start = Instant::now();
                photos.iter().for_each(|p| f(p));
                start.elapsed().as_secs_f64() * 1e3 / photos.len() as f64
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        println!("{label:<28} {:7.2} ms/photo", rounds[2]);
    };
    println!("{} photos from {folder}", photos.len());
    time("decode", &|p| {
        decode(p, &limits).expect("decodes");
    });
    // One photo at a time: a budget of max_pixels never waits.
    let budget = PixelBudget::new(limits.max_pixels);
    time("decode + all outputs", &|p| {
        stage.run(p, &budget, Duration::ZERO).expect("preprocesses");
    });
}
