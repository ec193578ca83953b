//! How far searches fall when deletes and puts reuse graph nodes, and what rebuilding at
//! `compact_reused_fraction` keeps: the measurement behind that setting's default.
//!
//!     cargo run --release -p visual-store --example node_reuse [-- VECTORS ROUNDS CHURN CENTRES]
//!
//! One usearch graph with the store's defaults (i8, cosine, `HnswParams::default()`) holds
//! VECTORS 512-d vectors (default 30,000) drawn around CENTRES centres (default 200: 150 a
//! cluster, dense as a large library's near-duplicates are; at 1,000 centres the harm below
//! nearly vanishes at this size). Each of ROUNDS rounds (default 12)
//! deletes a random CHURN share of them (default 0.25) and puts as many new ones, which take
//! the deleted nodes. After each round, 2,000 held vectors are searched for themselves: the
//! share found in their own top 10 ("self search"), and the held vectors that no other
//! node links to at the graph's base level ("no in-link": unreachable, whatever the
//! candidate list) are counted. Two graphs take the same operations: one
//! only reuses; the other is rebuilt from the vectors it holds whenever its reused nodes
//! reach half its vectors, as the store's compaction does by default.

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};
use visual_store::embedded::{EmbeddedConfig, HnswParams};

#[path = "support/rng.rs"]
mod rng;
use rng::{Clustered, Rng};

const DIMENSION: usize = 512;
const SAMPLE: usize = 2000;

/// A graph as the store makes one by default (its default encoding is i8).
fn new_index(capacity: usize) -> Index {
    let hnsw = HnswParams::default();
    let options = IndexOptions {
        dimensions: DIMENSION,
        metric: MetricKind::Cos,
        quantization: ScalarKind::I8,
        connectivity: hnsw.connectivity,
        expansion_add: hnsw.expansion_add,
        expansion_search: hnsw.expansion_search,
        multi: false,
    };
    let index = Index::new(&options).expect("create a graph");
    index.reserve(capacity).expect("reserve");
    index
}

/// A graph with the vectors it holds, and the nodes its adds reused since it was built.
struct Graph {
    index: Index,
    reused: usize,
    rebuilds: usize,
}

impl Graph {
    fn apply(&mut self, removed: &[u64], added: &[(u64, Vec<f32>)]) {
        for key in removed {
            self.index.remove(*key).expect("remove");
        }
        // Each add takes a node freed above while there are any.
        self.reused += removed.len().min(added.len());
        added.iter().for_each(|(key, v)| self.index.add(*key, v).expect("add"));
    }

    fn rebuild(&mut self, held: &[(u64, Vec<f32>)]) {
        self.index = new_index(held.len());
        held.iter().for_each(|(key, v)| self.index.add(*key, v).expect("add"));
        self.reused = 0;
        self.rebuilds += 1;
    }

    /// Held vectors that no held vector links to at level 0.
    fn without_in_links(&self, held: &[(u64, Vec<f32>)]) -> usize {
        let mut linked: std::collections::HashSet<u64> = std::collections::HashSet::new();
        for (key, _) in held {
            linked.extend(self.index.neighbors(*key, 0));
        }
        held.iter().filter(|(key, _)| !linked.contains(key)).count()
    }

    fn self_search(&self, sample: &[&(u64, Vec<f32>)]) -> f64 {
        let found =
            sample.iter().filter(|(key, v)| self.index.search(v, 10).expect("search").keys.contains(key)).count();
        found as f64 / sample.len() as f64
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: f64| args.get(i).map_or(default, |a| a.parse().expect("a number"));
    let (vectors, rounds, churn, centres) =
        (arg(0, 30_000.0) as usize, arg(1, 12.0) as usize, arg(2, 0.25), arg(3, 200.0) as usize);
    // The store's default share.
    let rebuild_share = f64::from(EmbeddedConfig::new(".").compact_reused_fraction);
    let mut clustered = Clustered::new(7, centres, DIMENSION);
    let mut rng = Rng(11);
    let mut held: Vec<(u64, Vec<f32>)> = (0..vectors as u64).map(|key| (key, clustered.vector())).collect();
    let mut next_key = vectors as u64;
    let mut reusing = Graph { index: new_index(2 * vectors), reused: 0, rebuilds: 0 };
    let mut rebuilt = Graph { index: new_index(2 * vectors), reused: 0, rebuilds: 0 };
    reusing.apply(&[], &held);
    rebuilt.apply(&[], &held);
    println!(
        "round  replaced  self search, no in-link (reuse only)  self search, no in-link (rebuilt at {rebuild_share})  rebuilds"
    );
    for round in 0..=rounds {
        if round > 0 {
            let count = (vectors as f64 * churn) as usize;
            let removed: Vec<u64> =
                (0..count).map(|_| held.swap_remove((rng.next() % held.len() as u64) as usize).0).collect();
            let added: Vec<(u64, Vec<f32>)> = (0..count)
                .map(|_| {
                    next_key += 1;
                    (next_key, clustered.vector())
                })
                .collect();
            reusing.apply(&removed, &added);
            rebuilt.apply(&removed, &added);
            held.extend(added);
            if rebuilt.reused as f64 >= rebuild_share * held.len() as f64 {
                rebuilt.rebuild(&held);
            }
        }
        let sample: Vec<&(u64, Vec<f32>)> =
            (0..SAMPLE).map(|_| &held[(rng.next() % held.len() as u64) as usize]).collect();
        println!(
            "{round:>5}  {:>7.0}%  {:>26.4}  {:>9}  {:>40.4}  {:>9}  {:>8}",
            100.0 * churn * round as f64,
            reusing.self_search(&sample),
            reusing.without_in_links(&held),
            rebuilt.self_search(&sample),
            rebuilt.without_in_links(&held),
            rebuilt.rebuilds
        );
    }
}
