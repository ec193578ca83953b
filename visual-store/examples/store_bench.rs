//! Embedded store speed: insert throughput, search latency (p50/p99) and recall@10 against
//! exact search, unfiltered and filtered, at 10,000 and 100,000 images with synthetic
//! 512-d vectors; reopen time at the largest size.
//!
//!     cargo run --release -p visual-store --example store_bench [-- 10000 100000]
//!
//! Vectors are drawn around 1,000 random centres (embeddings of photos cluster; uniform
//! noise in 512-d would be a needlessly adversarial case for any ANN index).

use std::time::Instant;

use rayon::prelude::*;
use visual_store::embedded::{EmbeddedConfig, EmbeddedStore};
use visual_store::validate::cosine;
use visual_store::{ImageRecord, Page, SearchFilter, Store};

#[path = "support/rng.rs"]
mod rng;
#[path = "support/stats.rs"]
mod stats;
use rng::Clustered;
use stats::p50_p99;

const DIMENSION: usize = 512;
const CENTRES: usize = 1000;
const QUERIES: usize = 200;
const K: usize = 10;
const BATCH: usize = 1000;

/// Tags: "common" on 30% of images, "rare" on 2%.
fn tags(i: usize) -> Vec<String> {
    let mut tags = Vec::new();
    if i % 10 < 3 {
        tags.push("common".to_owned());
    }
    if i % 50 == 7 {
        tags.push("rare".to_owned());
    }
    tags
}

fn exact_top(vectors: &[Vec<f32>], query: &[f32], keep: impl Fn(usize) -> bool + Sync) -> Vec<String> {
    let mut scored: Vec<(usize, f32)> =
        vectors.par_iter().enumerate().filter(|(i, _)| keep(*i)).map(|(i, v)| (i, cosine(query, v))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().take(K).map(|(i, _)| format!("{i:08}")).collect()
}

async fn measure(
    store: &EmbeddedStore,
    vectors: &[Vec<f32>],
    queries: &[Vec<f32>],
    label: &str,
    filter: SearchFilter,
    keep: impl Fn(usize) -> bool + Sync,
) {
    let mut latencies = Vec::with_capacity(queries.len());
    let mut recall_sum = 0.0;
    for query in queries {
        let started = Instant::now();
        let hits = store.search_images(query, &filter, Page { k: K, offset: 0 }).await.unwrap();
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
        let exact = exact_top(vectors, query, &keep);
        let found = hits.iter().filter(|h| exact.contains(&h.image_id)).count();
        recall_sum += found as f64 / exact.len().max(1) as f64;
    }
    let (p50, p99) = p50_p99(latencies);
    println!("  {label:<28} p50 {p50:>7.3} ms  p99 {p99:>7.3} ms  recall@10 {:.3}", recall_sum / queries.len() as f64);
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("sizes are numbers")).collect();
    let sizes = if sizes.is_empty() { vec![10_000, 100_000] } else { sizes };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    runtime.block_on(async {
        for &size in &sizes {
            let dir = tempfile::tempdir().unwrap();
            let mut synthetic = Clustered::new(42, CENTRES, DIMENSION);
            let vectors: Vec<Vec<f32>> = (0..size).map(|_| synthetic.vector()).collect();
            let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| synthetic.vector()).collect();
            println!("{size} images, {DIMENSION}-d:");

            let store = EmbeddedStore::open_async(EmbeddedConfig::new(dir.path())).await.unwrap();
            let started = Instant::now();
            for (batch_index, chunk) in vectors.chunks(BATCH).enumerate() {
                let records = chunk
                    .iter()
                    .enumerate()
                    .map(|(j, v)| {
                        let i = batch_index * BATCH + j;
                        ImageRecord {
                            id: format!("{i:08}"),
                            width: 640,
                            height: 480,
                            created_at: i as i64,
                            tags: tags(i),
                            metadata: serde_json::json!({}),
                            embedding: v.clone(),
                            objects: Vec::new(),
                            faces: Vec::new(),
                        }
                    })
                    .collect();
                store.put_batch(records).await.unwrap();
            }
            let seconds = started.elapsed().as_secs_f64();
            println!("  insert (batches of {BATCH}, fsync'ed)  {:.0} images/s ({seconds:.1} s)", size as f64 / seconds);

            measure(&store, &vectors, &queries, "text-style search, no filter", SearchFilter::default(), |_| true)
                .await;
            let common = SearchFilter { tags: vec!["common".into()], ..Default::default() };
            measure(&store, &vectors, &queries, "filter tag 30% (graph)", common, |i| i % 10 < 3).await;
            let rare = SearchFilter { tags: vec!["rare".into()], ..Default::default() };
            measure(&store, &vectors, &queries, "filter tag 2%", rare, |i| i % 50 == 7).await;
            let range =
                SearchFilter { created_from: Some(0), created_to: Some((size / 5) as i64), ..Default::default() };
            measure(&store, &vectors, &queries, "filter date 20%", range, |i| i <= size / 5).await;

            if size == *sizes.iter().max().unwrap() {
                let started = Instant::now();
                drop(store); // saves the graph
                println!("  close (graph checkpoint)      {:.2} s", started.elapsed().as_secs_f64());
                let started = Instant::now();
                let store = EmbeddedStore::open_async(EmbeddedConfig::new(dir.path())).await.unwrap();
                println!(
                    "  reopen, saved graph           {:.2} s ({:?})",
                    started.elapsed().as_secs_f64(),
                    store.recovery()
                );
                drop(store);
                for entry in std::fs::read_dir(dir.path()).unwrap() {
                    let path = entry.unwrap().path();
                    if path.extension().is_some_and(|e| e == "usearch") {
                        std::fs::remove_file(path).unwrap();
                    }
                }
                let started = Instant::now();
                let store = EmbeddedStore::open_async(EmbeddedConfig::new(dir.path())).await.unwrap();
                println!(
                    "  reopen, graph rebuilt         {:.2} s ({:?})",
                    started.elapsed().as_secs_f64(),
                    store.recovery()
                );
                drop(store);
            }
        }
    });
}
