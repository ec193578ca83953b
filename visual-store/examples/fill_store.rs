//! Fills an embedded store with copies of the real records of another store, to measure
//! search over more images than can be ingested on a small machine (about 14 photos/s
//! through Triton on 2 cores).
//!
//!     cargo run --release -p visual-store --example fill_store -- SOURCE TARGET COUNT
//!
//! SOURCE is a store folder holding really ingested photos (e.g. a gateway's
//! `<data-dir>/store`, while no gateway has it open); TARGET is created, or appended to,
//! until it holds COUNT images. Image i of TARGET is made from source record i % n (n source
//! records): for i < n the record itself, else a copy with a fresh random 64-hex id,
//! `"synthetic_copy_of": <source id>` in its metadata, and every vector (image, objects,
//! faces) replaced by the source vector plus Gaussian noise of norm NOISE, renormalised:
//! near the real one (cosine about 0.9), yet no two stored vectors are equal. Boxes,
//! classes, sizes, tags and dates are the source's. The records go through
//! `Store::put_batch` like ingested ones, so TARGET is an ordinary store (graphs built by
//! the store, saved at the end) that `gateway serve` opens as `<data-dir>/store`.
//! Deterministic: filling to 10,000 and then to 100,000 stores the same records as filling
//! to 100,000 at once.

use std::time::Instant;

#[path = "support/rng.rs"]
mod rng;
use rng::{normalised, Rng};

use rayon::prelude::*;
use visual_store::embedded::{EmbeddedConfig, EmbeddedStore};
use visual_store::validate::cosine;
use visual_store::{ImageRecord, PutOutcome, Store};

/// Norm of the noise added to each unit vector of a copy.
const NOISE: f32 = 0.5;
/// Records per durable commit.
const BATCH: usize = 2000;

/// `vector` plus noise of norm about NOISE, L2-normalised again.
fn perturbed(vector: &[f32], rng: &mut Rng) -> Vec<f32> {
    let scale = NOISE / (vector.len() as f32).sqrt();
    normalised(vector.iter().map(|x| x + scale * rng.gaussian()).collect())
}

/// A noisy copy of `source`; its randomness depends only on `index`, its position in TARGET.
fn synthetic_copy(source: &ImageRecord, index: usize) -> ImageRecord {
    let mut rng = Rng((index as u64).wrapping_mul(0xD134_2543_DE82_EF95));
    let id = (0..4).map(|_| format!("{:016x}", rng.next())).collect::<String>();
    let mut metadata = match &source.metadata {
        serde_json::Value::Object(fields) => fields.clone(),
        _ => serde_json::Map::new(),
    };
    metadata.insert("synthetic_copy_of".into(), source.id.clone().into());
    let mut record = source.clone();
    record.id = id;
    record.metadata = metadata.into();
    record.embedding = perturbed(&source.embedding, &mut rng);
    for object in &mut record.objects {
        object.embedding = perturbed(&object.embedding, &mut rng);
    }
    for face in &mut record.faces {
        face.embedding = perturbed(&face.embedding, &mut rng);
    }
    record
}

/// Image `i` of TARGET: source record i % n itself for i < n, else a noisy copy of it.
fn record_at(sources: &[ImageRecord], i: usize) -> ImageRecord {
    let source = &sources[i % sources.len()];
    if i < sources.len() {
        source.clone()
    } else {
        synthetic_copy(source, i)
    }
}

fn mean(values: impl Iterator<Item = f32>) -> f32 {
    let (sum, count) = values.fold((0.0f64, 0usize), |(s, c), v| (s + v as f64, c + 1));
    (sum / count.max(1) as f64) as f32
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source_dir, target_dir, count] = &args[..] else {
        eprintln!("usage: fill_store SOURCE_STORE TARGET_STORE COUNT");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT is a number");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    runtime.block_on(async {
        let source_store = EmbeddedStore::open_async(EmbeddedConfig::new(source_dir)).await.expect("open SOURCE");
        let mut sources = Vec::new();
        for id in source_store.image_ids() {
            sources.push(source_store.get(&id).await.expect("read SOURCE").expect("listed id is stored"));
        }
        drop(source_store);
        assert!(!sources.is_empty(), "SOURCE {source_dir} holds no images");
        let objects: usize = sources.iter().map(|r| r.objects.len()).sum();
        let faces: usize = sources.iter().map(|r| r.faces.len()).sum();
        let between_sources = mean(sources.iter().enumerate().flat_map(|(i, a)| {
            sources[i + 1..].iter().map(move |b| cosine(&a.embedding, &b.embedding))
        }));
        println!(
            "{} source images ({objects} objects, {faces} faces) from {source_dir}; mean cosine between them {between_sources:.3}",
            sources.len()
        );

        let target = EmbeddedStore::open_async(EmbeddedConfig::new(target_dir)).await.expect("open TARGET");
        let first = target.count().await.unwrap();
        let started = Instant::now();
        let mut copy_similarity = Vec::new();
        for batch_start in (first..count).step_by(BATCH) {
            let indices = batch_start..(batch_start + BATCH).min(count);
            let records: Vec<ImageRecord> = indices.clone().into_par_iter().map(|i| record_at(&sources, i)).collect();
            if copy_similarity.is_empty() {
                // How far the noise moved the copies from their sources, on the first batch.
                copy_similarity = indices
                    .zip(&records)
                    .filter(|(i, _)| *i >= sources.len())
                    .map(|(i, record)| cosine(&record.embedding, &sources[i % sources.len()].embedding))
                    .collect();
            }
            for outcome in target.put_batch(records).await.expect("put_batch") {
                assert_eq!(outcome.expect("valid record"), PutOutcome::Created, "ids are new");
            }
        }
        let insert_s = started.elapsed().as_secs_f64();
        let checkpoint_started = Instant::now();
        target.checkpoint().expect("save graphs");
        let added = count.saturating_sub(first);
        println!(
            "{target_dir}: {first} -> {} images; inserted {added} in {insert_s:.1} s = {:.0} images/s \
             (batches of {BATCH}, fsync'ed), graphs saved in {:.1} s; mean cosine of a copy to its source {:.3}",
            target.count().await.unwrap(),
            added as f64 / insert_s.max(1e-9),
            checkpoint_started.elapsed().as_secs_f64(),
            mean(copy_similarity.into_iter()),
        );
    });
}
