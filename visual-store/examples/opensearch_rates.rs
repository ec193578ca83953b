//! The OpenSearch store's rates on whatever nodes it is given (docs/scaling.md compares
//! one node with a three-node cluster): bulk insert of synthetic images (512-d vectors
//! around 1,000 centres, 4 objects each), image and object search latency one query at a
//! time and throughput with 8 at once (as loaded, and again after a force merge to one
//! segment per shard), image search recall@10 against brute force, the index's size per
//! million vectors, and each node's memory. Writes one JSON report.
//!
//!     cargo run --release -p visual-store --example opensearch_rates -- \
//!         --urls http://127.0.0.1:9200[,URL...] --images 20000 --label one-node --out FILE
//!
//! The index is created with the store's default settings (2 shards, 1 replica) unless
//! `--replicas N` says otherwise, and deleted at the end.

use std::time::Instant;

use rayon::prelude::*;
use serde_json::{json, Value};
use visual_store::opensearch::{query, IndexSettings, OpenSearchConfig, OpenSearchStore};
use visual_store::validate::cosine;
use visual_store::{ImageRecord, ObjectRecord, Page, SearchFilter, Store};

#[path = "support/rng.rs"]
mod rng;
#[path = "support/stats.rs"]
mod stats;
use rng::Clustered;
use stats::p50_p99;

const DIMENSION: usize = 512;
const CENTRES: usize = 1000;
const OBJECTS_PER_IMAGE: usize = 4;
const BATCH: usize = 500;
const QUERIES: usize = 200;
const CONCURRENT: usize = 8;
const K: usize = 10;

struct Args {
    urls: String,
    images: usize,
    label: String,
    out: String,
    replicas: Option<u32>,
}

fn args() -> Args {
    let mut args =
        Args { urls: String::new(), images: 20_000, label: "run".into(), out: String::new(), replicas: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--urls" => args.urls = value(),
            "--images" => args.images = value().parse().expect("--images is a number"),
            "--label" => args.label = value(),
            "--out" => args.out = value(),
            "--replicas" => args.replicas = Some(value().parse().expect("--replicas is a number")),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!args.urls.is_empty() && !args.out.is_empty(), "--urls and --out are required");
    args
}

/// Synthetic photos: vectors around fixed centres, 4 objects each.
struct Synthetic(Clustered);

impl Synthetic {
    fn vector(&mut self) -> Vec<f32> {
        self.0.vector()
    }

    fn record(&mut self, i: usize) -> ImageRecord {
        let objects = (0..OBJECTS_PER_IMAGE)
            .map(|o| ObjectRecord {
                class_id: (o * 7 % 80) as u32,
                class_name: format!("class{}", o * 7 % 80),
                confidence: 0.5 + 0.1 * o as f32,
                bbox: [10.0, 10.0, 100.0, 100.0],
                embedding: self.vector(),
            })
            .collect();
        ImageRecord {
            id: format!("{i:064x}"),
            width: 640,
            height: 480,
            created_at: 1_600_000_000 + i as i64,
            tags: if i % 10 < 3 { vec!["common".into()] } else { Vec::new() },
            metadata: json!({}),
            embedding: self.vector(),
            objects,
            faces: Vec::new(),
        }
    }
}

/// Sequential latencies (ms) of `search` over the queries, and the queries per second with
/// `CONCURRENT` clients sharing the store.
async fn latency_and_throughput<F, Fut>(queries: &[Vec<f32>], search: F) -> Value
where
    F: Fn(Vec<f32>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut latencies = Vec::with_capacity(queries.len());
    for query in queries {
        let started = Instant::now();
        search(query.clone()).await;
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, p99) = p50_p99(latencies);
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..CONCURRENT {
        let mine: Vec<Vec<f32>> = queries.iter().skip(client).step_by(CONCURRENT).cloned().collect();
        let search = search.clone();
        clients.push(tokio::spawn(async move {
            for query in mine {
                search(query).await;
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let qps = queries.len() as f64 / started.elapsed().as_secs_f64();
    json!({"p50_ms": round(p50), "p99_ms": round(p99), "queries_per_s_8_clients": round(qps)})
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let mut synthetic = Synthetic(Clustered::new(7, CENTRES, DIMENSION));
    let index = format!("rates-{}-{}", args.label, std::process::id());
    let mut config = OpenSearchConfig::new(&args.urls, &index, DIMENSION);
    if let Some(replicas) = args.replicas {
        config.index_settings = IndexSettings { replicas, ..IndexSettings::default() };
    }
    let nodes = config.urls.len();
    let settings = config.index_settings.clone();
    // The store's own index, created here with separate files per segment instead of one
    // compound file, so that the HNSW files can be measured; the store checks its mapping.
    let mut body = query::create_index(DIMENSION, config.limits.max_window, &settings);
    body["settings"]["index"]["use_compound_file"] = json!(false);
    body["settings"]["index"]["compound_format"] = json!(false);
    let parts = opensearch::indices::IndicesCreateParts::Index(&index);
    let answer = first_node(&args.urls).indices().create(parts).body(body).send().await.unwrap();
    assert!(answer.status_code().is_success(), "create the index: {:?}", answer.text().await);
    let store = OpenSearchStore::connect(config).await.expect("connect");

    let mut image_vectors = Vec::with_capacity(args.images);
    let mut put_seconds = 0.0;
    let mut first = 0;
    while first < args.images {
        let last = (first + BATCH).min(args.images);
        let batch: Vec<ImageRecord> = (first..last).map(|i| synthetic.record(i)).collect();
        image_vectors.extend(batch.iter().map(|r| r.embedding.clone()));
        let started = Instant::now();
        for outcome in store.put_batch(batch).await.expect("put_batch") {
            outcome.expect("every record stored");
        }
        put_seconds += started.elapsed().as_secs_f64();
        first = last;
    }
    let insert_rate = args.images as f64 / put_seconds;
    println!("{}: {} images into {nodes} node(s): {insert_rate:.0} images/s", args.label, args.images);

    let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| synthetic.vector()).collect();
    let mut recall = 0.0;
    for query in &queries {
        let hits = store.search_images(query, &SearchFilter::default(), Page { k: K, offset: 0 }).await.unwrap();
        let mut exact: Vec<(usize, f32)> =
            image_vectors.par_iter().enumerate().map(|(i, v)| (i, cosine(query, v))).collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        let exact: Vec<String> = exact.iter().take(K).map(|(i, _)| format!("{i:064x}")).collect();
        recall += hits.iter().filter(|h| exact.contains(&h.image_id)).count() as f64 / K as f64;
    }
    recall /= QUERIES as f64;

    let as_loaded = search_rates(&store, &queries).await;
    let segments_as_loaded = primary_segments(&args.urls, &index).await;
    // Bulk loading leaves many small segments, each with its own HNSW graph that every
    // query walks; merged into one per shard, as a library that stopped growing ends up.
    let merge_started = Instant::now();
    let method = opensearch::http::Method::Post;
    let path = format!("/{index}/_forcemerge?max_num_segments=1");
    let merged = first_node(&args.urls).send::<(), ()>(method, &path, Default::default(), None, None, None).await;
    assert!(merged.unwrap().status_code().is_success(), "force merge");
    let merge_s = merge_started.elapsed().as_secs_f64();
    let merged = search_rates(&store, &queries).await;
    let segments_merged = primary_segments(&args.urls, &index).await;
    let size = index_size(&args.urls, &index).await;
    let vector_files = vector_file_bytes(&args.urls, &index).await;
    let node_memory = node_memory(&args.urls).await;
    store.delete_index().await.expect("delete the index");

    let vectors = args.images * (1 + OBJECTS_PER_IMAGE);
    let per_million = |bytes: f64| round(bytes / vectors as f64 * 1e6 / (1 << 20) as f64);
    let report = json!({
        "label": args.label,
        "nodes": nodes,
        "index_settings": {"shards": settings.shards, "replicas": settings.replicas, "m": settings.m,
                           "ef_construction": settings.ef_construction, "ef_search": settings.ef_search},
        "images": args.images,
        "vectors": vectors,
        "insert_images_per_s": round(insert_rate),
        "batch": BATCH,
        "image_recall_at_10": round(recall),
        "search_as_loaded": as_loaded,
        "primary_segments_as_loaded": segments_as_loaded,
        "force_merge_s": round(merge_s),
        "search_merged": merged,
        "primary_segments_merged": segments_merged,
        "index_primaries_mib": round(size.0 / (1 << 20) as f64),
        "index_total_mib": round(size.1 / (1 << 20) as f64),
        "primaries_mib_per_million_vectors": per_million(size.0),
        "hnsw_files_mib_per_million_vectors_all_copies": per_million(vector_files),
        "nodes_memory_mib": node_memory,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    std::fs::write(&args.out, serde_json::to_string_pretty(&report).unwrap()).expect("write the report");
}

/// Bytes of the index's primaries and of all its copies, from `_stats/store` (after a
/// flush, so the translog is not counted twice).
async fn index_size(urls: &str, index: &str) -> (f64, f64) {
    let client = first_node(urls);
    client.indices().flush(opensearch::indices::IndicesFlushParts::Index(&[index])).send().await.unwrap();
    let stats: Value = client
        .indices()
        .stats(opensearch::indices::IndicesStatsParts::IndexMetric(&[index], &["store"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bytes = |group: &str| stats["indices"][index][group]["store"]["size_in_bytes"].as_f64().unwrap_or(f64::NAN);
    (bytes("primaries"), bytes("total"))
}

/// Bytes of Lucene's HNSW files (`.vec` vectors, `.vex` graph, and their metadata) of the
/// index on every node, read from the nodes' data folders (loopback nodes: this machine's
/// disk). Lucene searches them through mmap, so this is the page cache a node needs to
/// search without disk reads; the JVM heap comes on top.
async fn vector_file_bytes(urls: &str, index: &str) -> f64 {
    let client = first_node(urls);
    let get = |path: String| {
        let client = client.clone();
        async move {
            let method = opensearch::http::Method::Get;
            let response = client.send::<(), ()>(method, &path, Default::default(), None, None, None).await.unwrap();
            response.json::<Value>().await.unwrap()
        }
    };
    let uuid = get(format!("/_cat/indices/{index}?format=json&h=uuid")).await[0]["uuid"].as_str().unwrap().to_owned();
    let nodes = get("/_nodes/stats/fs?filter_path=nodes.*.fs.data.path".into()).await;
    let mut bytes = 0u64;
    for node in nodes["nodes"].as_object().unwrap().values() {
        for data in node["fs"]["data"].as_array().unwrap() {
            let folder = std::path::Path::new(data["path"].as_str().unwrap()).join("indices").join(&uuid);
            bytes += hnsw_bytes(&folder);
        }
    }
    bytes as f64
}

fn hnsw_bytes(folder: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(folder) else { return 0 };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                return hnsw_bytes(&path);
            }
            let hnsw = matches!(path.extension().and_then(|e| e.to_str()), Some("vec" | "vex" | "vem" | "vemf"));
            if hnsw {
                entry.metadata().map(|m| m.len()).unwrap_or(0)
            } else {
                0
            }
        })
        .sum()
}

/// Each node's JVM heap limit and its process's resident memory (VmRSS: heap in use plus
/// the index files Lucene has mapped and touched), read from /proc for loopback nodes.
async fn node_memory(urls: &str) -> Value {
    let method = opensearch::http::Method::Get;
    let path = "/_nodes/stats/jvm,process?filter_path=nodes.*.name,nodes.*.jvm.mem.heap_max_in_bytes";
    let client = first_node(urls);
    let stats: Value =
        client.send::<(), ()>(method, path, Default::default(), None, None, None).await.unwrap().json().await.unwrap();
    let info: Value = client
        .send::<(), ()>(method, "/_nodes/process?filter_path=nodes.*.process.id", Default::default(), None, None, None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mib = |bytes: f64| round(bytes / (1 << 20) as f64);
    let mut nodes: Vec<Value> = stats["nodes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, node)| {
            let pid = info["nodes"][id]["process"]["id"].as_u64().unwrap_or_default();
            let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| {
                    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
                    line.split_whitespace().nth(1)?.parse::<f64>().ok()
                })
                .unwrap_or(f64::NAN);
            json!({
                "node": node["name"],
                "heap_max_mib": mib(node["jvm"]["mem"]["heap_max_in_bytes"].as_f64().unwrap_or(f64::NAN)),
                "rss_mib": round(rss_kib / 1024.0),
            })
        })
        .collect();
    nodes.sort_by_key(|node| node["node"].as_str().unwrap_or_default().to_owned());
    Value::Array(nodes)
}

/// A client of the first node, for the cluster-wide statistics calls.
fn first_node(urls: &str) -> opensearch::OpenSearch {
    let url = urls.split(',').next().unwrap().trim();
    opensearch::OpenSearch::new(opensearch::http::transport::Transport::single_node(url).unwrap())
}

/// Image, tag-filtered image and object search latency and throughput, k = 10.
async fn search_rates(store: &OpenSearchStore, queries: &[Vec<f32>]) -> Value {
    let page = Page { k: K, offset: 0 };
    let images = {
        let store = store.clone();
        latency_and_throughput(queries, move |q| {
            let store = store.clone();
            async move {
                store.search_images(&q, &SearchFilter::default(), page).await.unwrap();
            }
        })
        .await
    };
    let filtered = {
        let store = store.clone();
        let filter = SearchFilter { tags: vec!["common".into()], ..SearchFilter::default() };
        latency_and_throughput(queries, move |q| {
            let (store, filter) = (store.clone(), filter.clone());
            async move {
                store.search_images(&q, &filter, page).await.unwrap();
            }
        })
        .await
    };
    let objects = {
        let store = store.clone();
        latency_and_throughput(queries, move |q| {
            let store = store.clone();
            async move {
                store.search_objects(&q, &SearchFilter::default(), page).await.unwrap();
            }
        })
        .await
    };
    json!({"image": images, "image_tag_30pct": filtered, "object": objects})
}

/// Segments of the index's primary shards (each holds its own HNSW graphs).
async fn primary_segments(urls: &str, index: &str) -> usize {
    let method = opensearch::http::Method::Get;
    let path = format!("/_cat/segments/{index}?format=json&h=prirep");
    let answer = first_node(urls).send::<(), ()>(method, &path, Default::default(), None, None, None).await.unwrap();
    let segments: Value = answer.json().await.unwrap();
    segments.as_array().unwrap().iter().filter(|s| s["prirep"] == "p").count()
}
