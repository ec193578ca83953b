//! The embedded store at scale (issue 17): bulk insert rate, search latency and recall@10 of
//! every query kind under filters of every selectivity, resident memory, reopen times (clean
//! and after `kill -9`) and search latency while a writer or a checkpoint runs.
//!
//!     cargo run --release -p visual-store --example store_scale -- [--images 1000000]
//!         [--queries 100] [--data-dir DIR] [--source STORE_DIR] [--out FILE]
//!         [--batch 1000] [--writer-seconds 30] [--seed 7]
//!
//! The store is built fresh at `<data-dir>/store` (the path a gateway opens) and left there.
//! Every record is a pure function of (seed, image index), so the exact reference is one
//! streaming pass that regenerates the vectors instead of holding them (6M x 512 f32 would be
//! 12 GB). The query phase and the killed writer are this binary again (hidden `--role`), so
//! the resident memory measured is the store's, not the generator's. benchmarks/README.md
//! ("The embedded store at scale") explains every number of the JSON it writes.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use visual_store::embedded::{EmbeddedConfig, EmbeddedStore};
use visual_store::{FaceRecord, ImageRecord, ObjectRecord, Page, PutOutcome, SearchFilter, Store};

#[path = "support/rng.rs"]
mod rng;
#[path = "support/stats.rs"]
mod stats;
use rng::{normalised, Rng};
use stats::p50_p99;

const DIMENSION: usize = 512;
/// Face embeddings are 128-d (MobileFaceNet), zero-padded to the store's length as the
/// gateway stores them.
const FACE_DIMENSION: usize = 128;
/// Image and object vectors lie around N / IMAGES_PER_CENTRE random centres (at least 50, at
/// most 5,000: photos cluster). Growing with N keeps a query's top 10 inside its cluster at
/// every size; with a fixed count a small store has a few members per cluster, and the rest
/// of the top 10 are unrelated vectors at near-equal similarity.
const IMAGES_PER_CENTRE: usize = 200;
/// Faces lie around N / FACES_PER_IDENTITY identities (at least 100, at most 20,000), so
/// that a face query's top 10 are faces of its person at every N rather than, in a small
/// store, a few of its person and then unrelated faces at near-equal similarity.
const FACES_PER_IDENTITY: usize = 50;
const K: usize = 10;
/// Records per put_batch of the concurrent writers (a gateway batch, not a bulk load).
const WRITER_BATCH: usize = 100;
/// Images put before each checkpoint of the search-during-checkpoint measurement.
const DIRTYING_BATCH: u64 = 10;
/// Images per block of the reference pass: ~100 vectors, small enough to stay in cache
/// while every query is scored against them.
const REFERENCE_BLOCK: usize = 16;
/// created_at spans ten years from 2015-01-01.
const DATE_FROM: i64 = 1_420_070_400;
const DATE_SPAN: i64 = 10 * 365 * 86_400;
/// Tags carried by about this fraction of the images (drawn independently per image), and
/// the filter's name in the results.
const TAGS: [(&str, f32, &str); 5] = [
    ("tag_0.01pct", 0.0001, "tag 0.01%"),
    ("tag_0.1pct", 0.001, "tag 0.1%"),
    ("tag_1pct", 0.01, "tag 1%"),
    ("tag_10pct", 0.1, "tag 10%"),
    ("tag_50pct", 0.5, "tag 50%"),
];
/// Date windows: fraction of the ten years, and the filter's name.
const DATE_WINDOWS: [(f64, &str); 3] =
    [(0.0001, "date 0.01% of range"), (0.01, "date 1% of range"), (0.25, "date 25% of range")];
/// Index offsets of records added after the measured N (search under write, killed writer),
/// far from 0..N so that their ids never repeat one of the N.
const UNDER_WRITE_FROM: u64 = 1 << 40;
const KILLED_WRITER_FROM: u64 = 2 << 40;

#[rustfmt::skip]
const COCO_CLASSES: [&str; 80] = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
enum Kind {
    Image,
    Object,
    Face,
}
const KINDS: [Kind; 3] = [Kind::Image, Kind::Object, Kind::Face];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Object => "object",
            Kind::Face => "face",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Arguments

#[derive(Clone, Debug)]
struct Args {
    images: usize,
    queries: usize,
    seed: u64,
    data_dir: PathBuf,
    source: Option<PathBuf>,
    out: PathBuf,
    batch: usize,
    writer_seconds: f64,
    /// The results file of an earlier run of the same --images and --seed whose store is
    /// measured again (with its build numbers) instead of building one.
    reuse_from: Option<PathBuf>,
    /// Search settings of the measured store (EmbeddedConfig's defaults when absent), to
    /// compare search plans on one store (the graphs' build parameters stay the defaults).
    in_graph_filter_fraction: Option<f32>,
    exact_scan_limit: Option<usize>,
    expansion_search: Option<usize>,
    object_expansion_factor: Option<usize>,
    filtered_expansion_factor: Option<usize>,
    rescore_factor: Option<usize>,
    /// Graph build parameters of a store built here (HnswParams's defaults when absent); a
    /// reused store keeps the ones it was built with.
    connectivity: Option<usize>,
    expansion_add: Option<usize>,
    /// Hidden: "query" (the measured process) or "writer" (the one killed with SIGKILL).
    role: Option<String>,
    /// Hidden: where the query role writes its report.
    report: Option<PathBuf>,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            images: 1_000_000,
            queries: 100,
            seed: 7,
            data_dir: PathBuf::from(".cache/bench/store-scale"),
            source: None,
            out: PathBuf::from("benchmarks/results/store_scale.json"),
            batch: 1000,
            writer_seconds: 30.0,
            reuse_from: None,
            in_graph_filter_fraction: None,
            exact_scan_limit: None,
            expansion_search: None,
            object_expansion_factor: None,
            filtered_expansion_factor: None,
            rescore_factor: None,
            connectivity: None,
            expansion_add: None,
            role: None,
            report: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
            let number = |v: String| v.parse::<f64>().unwrap_or_else(|_| usage(&format!("{flag}: not a number")));
            match flag.as_str() {
                "--images" => args.images = number(value()) as usize,
                "--queries" => args.queries = number(value()) as usize,
                "--seed" => args.seed = number(value()) as u64,
                "--data-dir" => args.data_dir = value().into(),
                "--source" => args.source = Some(value().into()),
                "--out" => args.out = value().into(),
                "--batch" => args.batch = number(value()) as usize,
                "--writer-seconds" => args.writer_seconds = number(value()),
                "--reuse-from" => args.reuse_from = Some(value().into()),
                "--in-graph-filter-fraction" => args.in_graph_filter_fraction = Some(number(value()) as f32),
                "--exact-scan-limit" => args.exact_scan_limit = Some(number(value()) as usize),
                "--expansion-search" => args.expansion_search = Some(number(value()) as usize),
                "--object-expansion-factor" => args.object_expansion_factor = Some(number(value()) as usize),
                "--filtered-expansion-factor" => args.filtered_expansion_factor = Some(number(value()) as usize),
                "--rescore-factor" => args.rescore_factor = Some(number(value()) as usize),
                "--connectivity" => args.connectivity = Some(number(value()) as usize),
                "--expansion-add" => args.expansion_add = Some(number(value()) as usize),
                "--role" => args.role = Some(value()),
                "--report" => args.report = Some(value().into()),
                _ => usage(&format!("unknown argument {flag}")),
            }
        }
        if args.images == 0 || args.queries == 0 || args.batch == 0 {
            usage("--images, --queries and --batch must be positive");
        }
        args
    }

    fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// The measured store's configuration: the defaults with the search settings given.
    fn store_config(&self) -> EmbeddedConfig {
        let mut config = EmbeddedConfig::new(self.store_dir());
        if let Some(fraction) = self.in_graph_filter_fraction {
            config.in_graph_filter_fraction = fraction;
        }
        if let Some(limit) = self.exact_scan_limit {
            config.exact_scan_limit = limit;
        }
        if let Some(ef) = self.expansion_search {
            config.hnsw.expansion_search = ef;
        }
        if let Some(factor) = self.object_expansion_factor {
            config.object_expansion_factor = factor;
        }
        if let Some(factor) = self.filtered_expansion_factor {
            config.filtered_expansion_factor = factor;
        }
        if let Some(factor) = self.rescore_factor {
            config.rescore_factor = factor;
        }
        if let Some(connectivity) = self.connectivity {
            config.hnsw.connectivity = connectivity;
        }
        if let Some(expansion) = self.expansion_add {
            config.hnsw.expansion_add = expansion;
        }
        config
    }

    /// The arguments that make a child process see the same data set.
    fn child_args(&self) -> Vec<String> {
        let mut out = vec![
            "--images".into(),
            self.images.to_string(),
            "--queries".into(),
            self.queries.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
        ];
        if let Some(source) = &self.source {
            out.extend(["--source".into(), source.display().to_string()]);
        }
        if let Some(fraction) = self.in_graph_filter_fraction {
            out.extend(["--in-graph-filter-fraction".into(), fraction.to_string()]);
        }
        if let Some(limit) = self.exact_scan_limit {
            out.extend(["--exact-scan-limit".into(), limit.to_string()]);
        }
        if let Some(ef) = self.expansion_search {
            out.extend(["--expansion-search".into(), ef.to_string()]);
        }
        if let Some(factor) = self.object_expansion_factor {
            out.extend(["--object-expansion-factor".into(), factor.to_string()]);
        }
        if let Some(factor) = self.filtered_expansion_factor {
            out.extend(["--filtered-expansion-factor".into(), factor.to_string()]);
        }
        if let Some(factor) = self.rescore_factor {
            out.extend(["--rescore-factor".into(), factor.to_string()]);
        }
        if let Some(connectivity) = self.connectivity {
            out.extend(["--connectivity".into(), connectivity.to_string()]);
        }
        if let Some(expansion) = self.expansion_add {
            out.extend(["--expansion-add".into(), expansion.to_string()]);
        }
        out
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("store_scale: {problem}");
    eprintln!(
        "usage: store_scale [--images N] [--queries N] [--data-dir DIR] [--source STORE_DIR] [--out FILE] \
         [--batch N] [--writer-seconds S] [--seed N] [--reuse-from FILE] [--in-graph-filter-fraction F] \
         [--exact-scan-limit N] [--expansion-search N] [--object-expansion-factor N] \
         [--filtered-expansion-factor N] [--rescore-factor N] [--connectivity N] [--expansion-add N]"
    );
    std::process::exit(2)
}

// ---------------------------------------------------------------------------------------
// The data set: every record and query regenerated from (seed, index)

/// The vectors of one really ingested record, copied with noise into half of the images.
struct SourceVectors {
    image: Vec<f32>,
    objects: Vec<Vec<f32>>,
}

struct Dataset {
    seed: u64,
    centres: Vec<Vec<f32>>,
    identities: Vec<Vec<f32>>,
    sources: Vec<SourceVectors>,
    /// Cumulative class probabilities: Zipf (exponent 1.1) in COCO order, so "person" is on
    /// about 2/3 of the images and "toothbrush" on under 1%.
    class_cdf: Vec<f32>,
}

impl Dataset {
    fn new(seed: u64, images: usize, sources: Vec<SourceVectors>) -> Dataset {
        let mut rng = Rng(seed ^ 0x5EED_CE27);
        let centres = (0..(images / IMAGES_PER_CENTRE).clamp(50, 5000))
            .map(|_| normalised((0..DIMENSION).map(|_| rng.signed()).collect()))
            .collect();
        let identities = (0..(images / FACES_PER_IDENTITY).clamp(100, 20_000))
            .map(|_| normalised((0..FACE_DIMENSION).map(|_| rng.signed()).collect()))
            .collect();
        let weights: Vec<f64> = (1..=COCO_CLASSES.len()).map(|r| (r as f64).powf(-1.1)).collect();
        let total: f64 = weights.iter().sum();
        let class_cdf = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w / total;
                Some(*acc as f32)
            })
            .collect();
        Dataset { seed, centres, identities, sources, class_cdf }
    }

    /// Each image's own stream: its records never depend on the order of generation.
    fn rng(&self, index: u64, stream: u64) -> Rng {
        Rng(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD134_2543_DE82_EF95) ^ stream)
    }

    /// `around` plus uniform noise whose norm is drawn in [min_norm, max_norm] per vector.
    /// One fixed noise norm would put every member of a cluster at the same similarity to a
    /// query: recall@10 would then measure how near-ties are broken, not the index. Drawn
    /// norms spread the similarities, as photos near and far from a theme do.
    fn noisy(around: &[f32], min_norm: f32, max_norm: f32, rng: &mut Rng) -> Vec<f32> {
        let norm = min_norm + (max_norm - min_norm) * rng.unit();
        // Uniform [-1, 1) has standard deviation 1/sqrt(3).
        let scale = norm * 3f32.sqrt() / (around.len() as f32).sqrt();
        normalised(around.iter().map(|x| x + scale * rng.signed()).collect())
    }

    /// A point around a random centre; cosine 0.55-0.95 to it.
    fn clustered(&self, rng: &mut Rng) -> Vec<f32> {
        let centre = &self.centres[(rng.next() % self.centres.len() as u64) as usize];
        Dataset::noisy(centre, 0.3, 1.5, rng)
    }

    /// A 128-d face around a random identity (cosine 0.7-0.95 to it), zero-padded.
    fn face_vector(&self, rng: &mut Rng) -> Vec<f32> {
        let identity = &self.identities[(rng.next() % self.identities.len() as u64) as usize];
        let mut v = Dataset::noisy(identity, 0.3, 1.0, rng);
        v.resize(DIMENSION, 0.0);
        v
    }

    /// A really ingested vector plus noise of norm 0.2-0.8 (cosine ~0.8-0.98 to it; fill_store
    /// uses 0.5).
    fn noisy_copy(vector: &[f32], rng: &mut Rng) -> Vec<f32> {
        Dataset::noisy(vector, 0.2, 0.8, rng)
    }

    fn id_from(rng: &mut Rng) -> String {
        (0..4).map(|_| format!("{:016x}", rng.next())).collect()
    }

    /// The id of image `index` without generating the rest of it.
    fn image_id(&self, index: u64) -> String {
        Dataset::id_from(&mut self.rng(index, 0))
    }

    fn image(&self, index: u64) -> ImageRecord {
        let mut rng = self.rng(index, 0);
        let id = Dataset::id_from(&mut rng);
        // With --source, odd images carry noisy copies of really ingested vectors.
        let source = (!self.sources.is_empty() && index % 2 == 1)
            .then(|| &self.sources[(index / 2) as usize % self.sources.len()]);
        let embedding = match source {
            Some(s) => Dataset::noisy_copy(&s.image, &mut rng),
            None => self.clustered(&mut rng),
        };
        const SIZES: [(u32, u32); 5] = [(640, 480), (480, 640), (1024, 768), (1920, 1080), (4032, 3024)];
        let (width, height) = SIZES[(rng.next() % SIZES.len() as u64) as usize];
        let (w, h) = (width as f32, height as f32);
        let objects = (0..rng.next() % 9) // 0..=8 objects, 4 on average
            .map(|j| {
                let u = rng.unit();
                let class = self.class_cdf.partition_point(|&c| c < u).min(COCO_CLASSES.len() - 1);
                let confidence = 0.25 + 0.75 * rng.unit();
                let (x, y) = (rng.unit() * w * 0.8, rng.unit() * h * 0.8);
                let bbox = [x, y, x + rng.unit() * (w - x), y + rng.unit() * (h - y)];
                let embedding = match source {
                    Some(s) if !s.objects.is_empty() => {
                        Dataset::noisy_copy(&s.objects[j as usize % s.objects.len()], &mut rng)
                    }
                    Some(s) => Dataset::noisy_copy(&s.image, &mut rng),
                    None => self.clustered(&mut rng),
                };
                ObjectRecord {
                    class_id: class as u32,
                    class_name: COCO_CLASSES[class].to_owned(),
                    confidence,
                    bbox,
                    embedding,
                }
            })
            .collect();
        // 0 faces on 45% of the images, 1 on 25%, 2 on 20%, 3 on 10%: 0.95 on average.
        let face_count = match rng.next() % 20 {
            0..9 => 0,
            9..14 => 1,
            14..18 => 2,
            _ => 3,
        };
        let faces = (0..face_count)
            .map(|_| {
                let (x, y, side) = (rng.unit() * w * 0.7, rng.unit() * h * 0.7, 20.0 + rng.unit() * w * 0.2);
                let landmarks = [[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]
                    .map(|[fx, fy]| [x + fx * side, y + fy * side]);
                FaceRecord {
                    confidence: 0.5 + 0.5 * rng.unit(),
                    bbox: [x, y, x + side, y + side],
                    landmarks,
                    embedding: self.face_vector(&mut rng),
                }
            })
            .collect();
        let tags = TAGS.iter().filter(|(_, p, _)| rng.unit() < *p).map(|(t, _, _)| (*t).to_owned()).collect();
        let created_at = DATE_FROM + (rng.next() % DATE_SPAN as u64) as i64;
        ImageRecord {
            id,
            width,
            height,
            created_at,
            tags,
            metadata: json!({"scale_index": index}),
            embedding,
            objects,
            faces,
        }
    }

    /// The ingested record query `q` of a kind copies (with --source, odd image and object
    /// queries), or None for a synthetic query.
    fn query_source(&self, kind: Kind, q: usize) -> Option<&SourceVectors> {
        let source = (!self.sources.is_empty() && q % 2 == 1).then(|| &self.sources[q * 7919 % self.sources.len()])?;
        match kind {
            Kind::Face => None,
            Kind::Object if source.objects.is_empty() => None,
            _ => Some(source),
        }
    }

    /// Query `q` of a kind: drawn like the stored vectors, from a stream of its own.
    fn query(&self, kind: Kind, q: usize) -> Vec<f32> {
        let mut rng = self.rng(q as u64, 1 + kind as u64);
        match (kind, self.query_source(kind, q)) {
            (Kind::Image, Some(s)) => Dataset::noisy_copy(&s.image, &mut rng),
            (Kind::Object, Some(s)) => Dataset::noisy_copy(&s.objects[q % s.objects.len()], &mut rng),
            (Kind::Face, _) => self.face_vector(&mut rng),
            _ => self.clustered(&mut rng),
        }
    }
}

/// The vectors of every record of a really ingested store (opened and closed again here).
fn load_sources(dir: &Path) -> Vec<SourceVectors> {
    // Only read, but open and drop save its graphs: name a folder no gateway has open.
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir)).expect("open --source store");
    let rt = runtime();
    let sources: Vec<SourceVectors> = store
        .image_ids()
        .iter()
        .map(|id| {
            let record = rt.block_on(store.get(id)).expect("read --source").expect("listed id is stored");
            assert_eq!(record.embedding.len(), DIMENSION, "--source must hold {DIMENSION}-d vectors");
            SourceVectors {
                image: record.embedding,
                objects: record.objects.into_iter().map(|o| o.embedding).collect(),
            }
        })
        .collect();
    assert!(!sources.is_empty(), "--source {} holds no images", dir.display());
    sources
}

// ---------------------------------------------------------------------------------------
// Filters and their exact semantics (docs/stores.md, "Shared rules")

struct NamedFilter {
    name: String,
    filter: SearchFilter,
}

fn filters() -> Vec<NamedFilter> {
    let mut out = vec![NamedFilter { name: "none".into(), filter: SearchFilter::default() }];
    for (tag, _, name) in TAGS {
        out.push(NamedFilter {
            name: name.into(),
            filter: SearchFilter { tags: vec![tag.into()], ..Default::default() },
        });
    }
    // Windows inside the ten years, starting 40% in.
    for (fraction, name) in DATE_WINDOWS {
        let from = DATE_FROM + (DATE_SPAN as f64 * 0.4) as i64;
        let to = from + (DATE_SPAN as f64 * fraction) as i64;
        out.push(NamedFilter {
            name: name.into(),
            filter: SearchFilter { created_from: Some(from), created_to: Some(to), ..Default::default() },
        });
    }
    let class = |name: &str, classes: &[&str], min_confidence: f32| NamedFilter {
        name: name.into(),
        filter: SearchFilter {
            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            min_confidence,
            ..Default::default()
        },
    };
    out.push(class("class person", &["person"], 0.0));
    out.push(class("class person conf>=0.9", &["person"], 0.9));
    out.push(class("class dog|cat", &["dog", "cat"], 0.0));
    out.push(class("class toothbrush", &["toothbrush"], 0.0));
    out.push(class("class toothbrush conf>=0.9", &["toothbrush"], 0.9));
    out.push(class("any class conf>=0.97", &[], 0.97));
    out.push(NamedFilter {
        name: "tag 10% + person + date 25%".into(),
        filter: SearchFilter {
            tags: vec!["tag_10pct".into()],
            classes: vec!["person".into()],
            created_from: Some(DATE_FROM + (DATE_SPAN as f64 * 0.4) as i64),
            created_to: Some(DATE_FROM + (DATE_SPAN as f64 * 0.65) as i64),
            ..Default::default()
        },
    });
    assert!(out.len() <= 32, "filter masks are u32");
    out
}

fn object_condition_active(f: &SearchFilter) -> bool {
    !f.classes.is_empty() || f.min_confidence > 0.0
}

fn object_allowed(f: &SearchFilter, o: &ObjectRecord) -> bool {
    (f.classes.is_empty() || f.classes.contains(&o.class_name)) && o.confidence >= f.min_confidence
}

/// Tags and dates: the conditions on the image itself.
fn image_fields_match(f: &SearchFilter, r: &ImageRecord) -> bool {
    f.tags.iter().all(|t| r.tags.contains(t))
        && f.created_from.is_none_or(|from| r.created_at >= from)
        && f.created_to.is_none_or(|to| r.created_at <= to)
}

/// Image and face search: the image has an allowed object.
fn image_matches(f: &SearchFilter, r: &ImageRecord) -> bool {
    image_fields_match(f, r) && (!object_condition_active(f) || r.objects.iter().any(|o| object_allowed(f, o)))
}

/// Object search: the object itself is allowed.
fn object_matches(f: &SearchFilter, r: &ImageRecord, o: &ObjectRecord) -> bool {
    image_fields_match(f, r) && (!object_condition_active(f) || object_allowed(f, o))
}

// ---------------------------------------------------------------------------------------
// Exact reference: one streaming pass, every query and filter at once

/// The best K (score, image index, part index) seen, best first.
#[derive(Clone, Default)]
struct TopK(Vec<(f32, u64, u32)>);

impl TopK {
    fn floor(&self) -> f32 {
        if self.0.len() < K {
            f32::NEG_INFINITY
        } else {
            self.0[K - 1].0
        }
    }

    fn offer(&mut self, entry: (f32, u64, u32)) {
        let at = self.0.partition_point(|e| e.0 >= entry.0);
        if at < K {
            self.0.insert(at, entry);
            self.0.truncate(K);
        }
    }
}

/// What one worker of the reference pass found: per kind, query and filter the top K, and
/// per kind and filter how many items match.
struct Reference {
    /// [kind][query * filters + filter]
    top: Vec<Vec<TopK>>,
    /// Cached floors of `top`, so that most scores are refused with one comparison.
    floors: Vec<Vec<f32>>,
    /// [kind][filter]
    matching: Vec<Vec<u64>>,
    /// Items per kind (images, objects, faces).
    totals: Vec<u64>,
}

impl Reference {
    fn new(queries: usize, filters: usize) -> Reference {
        Reference {
            top: vec![vec![TopK::default(); queries * filters]; KINDS.len()],
            floors: vec![vec![f32::NEG_INFINITY; queries * filters]; KINDS.len()],
            matching: vec![vec![0; filters]; KINDS.len()],
            totals: vec![0; KINDS.len()],
        }
    }

    fn merge(mut self, other: Reference) -> Reference {
        for kind in 0..KINDS.len() {
            for (mine, theirs) in self.top[kind].iter_mut().zip(&other.top[kind]) {
                theirs.0.iter().for_each(|e| mine.offer(*e));
            }
            for (mine, theirs) in self.matching[kind].iter_mut().zip(&other.matching[kind]) {
                *mine += theirs;
            }
            self.totals[kind] += other.totals[kind];
        }
        self
    }

    /// Scores one block of images against every query of every kind.
    fn score_block(&mut self, first: u64, images: &[ImageRecord], filters: &[NamedFilter], queries: &[Vec<Vec<f32>>]) {
        let filter_count = filters.len();
        let mut items: [Vec<Item>; 3] = Default::default();
        for (offset, record) in images.iter().enumerate() {
            let index = first + offset as u64;
            let image_mask = mask(filters, |f| image_matches(f, record));
            items[0].push((&record.embedding, image_mask, index, 0));
            for (j, object) in record.objects.iter().enumerate() {
                let object_mask = mask(filters, |f| object_matches(f, record, object));
                items[1].push((&object.embedding, object_mask, index, j as u32));
            }
            for (j, face) in record.faces.iter().enumerate() {
                items[2].push((&face.embedding, image_mask, index, j as u32));
            }
        }
        for (kind, items) in items.iter().enumerate() {
            self.totals[kind] += items.len() as u64;
            for &(_, item_mask, _, _) in items {
                for_each_bit(item_mask, |f| self.matching[kind][f] += 1);
            }
            // Faces carry 128 meaningful dimensions; the rest are zeros.
            let length = if KINDS[kind] == Kind::Face { FACE_DIMENSION } else { DIMENSION };
            for (q, query) in queries[kind].iter().enumerate() {
                let (top, floors) = (&mut self.top[kind], &mut self.floors[kind]);
                for &(vector, item_mask, index, part) in items {
                    let score = dot(&query[..length], &vector[..length]);
                    for_each_bit(item_mask, |f| {
                        let slot = q * filter_count + f;
                        if score > floors[slot] {
                            top[slot].offer((score, index, part));
                            floors[slot] = top[slot].floor();
                        }
                    });
                }
            }
        }
    }
}

/// One vector of the reference pass: (vector, mask of the filters it passes, image index,
/// part index).
type Item<'a> = (&'a [f32], u32, u64, u32);

fn mask(filters: &[NamedFilter], matches: impl Fn(&SearchFilter) -> bool) -> u32 {
    filters.iter().enumerate().filter(|(_, f)| matches(&f.filter)).fold(0, |m, (i, _)| m | 1 << i)
}

fn for_each_bit(mut mask: u32, mut f: impl FnMut(usize)) {
    while mask != 0 {
        f(mask.trailing_zeros() as usize);
        mask &= mask - 1;
    }
}

/// Dot product of unit vectors (= their cosine), with independent lanes so it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut sums = [0.0f32; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for ((sum, x), y) in sums.iter_mut().zip(x).zip(y) {
            *sum += x * y;
        }
    }
    let tail: f32 =
        a.chunks_exact(LANES).remainder().iter().zip(b.chunks_exact(LANES).remainder()).map(|(x, y)| x * y).sum();
    sums.iter().sum::<f32>() + tail
}

/// The exact top K of every query under every filter over images 0..n, one pass; each
/// rayon worker takes every `workers`-th block and keeps its own top lists (no locks).
fn exact_reference(ds: &Dataset, n: usize, filters: &[NamedFilter], queries: &[Vec<Vec<f32>>]) -> Reference {
    let workers = rayon::current_num_threads();
    let blocks = n.div_ceil(REFERENCE_BLOCK);
    (0..workers)
        .into_par_iter()
        .map(|w| {
            let mut partial = Reference::new(queries[0].len(), filters.len());
            for block in (w..blocks).step_by(workers) {
                let first = block * REFERENCE_BLOCK;
                let images: Vec<ImageRecord> =
                    (first..(first + REFERENCE_BLOCK).min(n)).map(|i| ds.image(i as u64)).collect();
                partial.score_block(first as u64, &images, filters, queries);
            }
            partial
        })
        .reduce(|| Reference::new(queries[0].len(), filters.len()), Reference::merge)
}

// ---------------------------------------------------------------------------------------
// Measurements shared by the roles

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// VmRSS and VmHWM of this process in MiB, from /proc/self/status.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One search; the answer as comparable keys ("id" for images, "id#part" for parts).
async fn search(store: &EmbeddedStore, kind: Kind, query: &[f32], filter: &SearchFilter) -> Vec<String> {
    let page = Page { k: K, offset: 0 };
    match kind {
        Kind::Image => {
            store.search_images(query, filter, page).await.unwrap().into_iter().map(|h| h.image_id).collect()
        }
        Kind::Object => store
            .search_objects(query, filter, page)
            .await
            .unwrap()
            .into_iter()
            .map(|h| format!("{}#{}", h.image_id, h.object_index))
            .collect(),
        Kind::Face => store
            .search_faces(query, filter, page)
            .await
            .unwrap()
            .into_iter()
            .map(|h| format!("{}#{}", h.image_id, h.face_index))
            .collect(),
    }
}

fn all_queries(ds: &Dataset, count: usize) -> Vec<Vec<Vec<f32>>> {
    KINDS.iter().map(|&kind| (0..count).map(|q| ds.query(kind, q)).collect()).collect()
}

// ---------------------------------------------------------------------------------------
// Role "query": a fresh process opens the built store, searches, reports (RSS is the store's)

#[derive(Serialize, Deserialize)]
struct SearchRow {
    kind: Kind,
    filter: String,
    p50_ms: f64,
    p99_ms: f64,
    /// Per query, the keys returned.
    hits: Vec<Vec<String>>,
}

#[derive(Serialize, Deserialize)]
struct QueryReport {
    open_s: f64,
    recovery: String,
    memory: serde_json::Value,
    rows: Vec<SearchRow>,
    self_search: serde_json::Value,
    under_write: serde_json::Value,
}

fn query_role(args: &Args, ds: &Dataset) {
    let queries = all_queries(ds, args.queries);
    let filters = filters();
    let rt = runtime();
    let (base_rss, base_hwm) = memory_mib();
    let started = Instant::now();
    let store = EmbeddedStore::open(args.store_config()).expect("open the built store");
    let open_s = started.elapsed().as_secs_f64();
    let (open_rss, _) = memory_mib();

    let mut rows = Vec::new();
    for (k, &kind) in KINDS.iter().enumerate() {
        for named in &filters {
            let mut latencies = Vec::with_capacity(args.queries);
            let mut hits = Vec::with_capacity(args.queries);
            for query in &queries[k] {
                let t = Instant::now();
                hits.push(rt.block_on(search(&store, kind, query, &named.filter)));
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let (p50_ms, p99_ms) = p50_p99(latencies);
            rows.push(SearchRow { kind, filter: named.name.clone(), p50_ms, p99_ms, hits });
        }
    }
    let (rss, hwm) = memory_mib();
    let memory = json!({
        "baseline_rss_mib": round3(base_rss),
        "baseline_hwm_mib": round3(base_hwm),
        "after_open_rss_mib": round3(open_rss - base_rss),
        "after_queries_rss_mib": round3(rss - base_rss),
        "peak_hwm_mib": round3(hwm - base_rss),
        "note": "store's share: the process's VmRSS / VmHWM minus VmRSS before the open",
    });
    let self_search = self_search(args, ds, &store, &rt);
    let under_write = readers_under_write(args, ds, &store, &rt, &queries[0]);
    let recovery = format!("{:?}", store.recovery());
    let report = QueryReport { open_s, recovery, memory, rows, self_search, under_write };
    drop(store);
    let path = args.report.as_ref().expect("--role query needs --report");
    std::fs::write(path, serde_json::to_vec(&report).unwrap()).expect("write the query report");
}

/// Stored vectors sampled evenly over the images, per kind.
const SELF_SEARCH_SAMPLES: usize = 1000;

/// The share of sampled stored vectors that an unfiltered search for the vector itself
/// returns in its top K, per kind: a node no graph search reaches is never returned, whatever
/// the query, and only this shows how many there are.
fn self_search(args: &Args, ds: &Dataset, store: &EmbeddedStore, rt: &tokio::runtime::Runtime) -> serde_json::Value {
    let none = SearchFilter::default();
    let (mut found, mut tried) = ([0usize; 3], [0usize; 3]);
    let stride = (args.images / SELF_SEARCH_SAMPLES).max(1);
    for index in (0..args.images).step_by(stride).take(SELF_SEARCH_SAMPLES) {
        let record = ds.image(index as u64);
        let part = |count: usize| (count > 0).then(|| index % count);
        let samples = [
            Some((Kind::Image, record.id.clone(), &record.embedding)),
            part(record.objects.len())
                .map(|p| (Kind::Object, format!("{}#{p}", record.id), &record.objects[p].embedding)),
            part(record.faces.len()).map(|p| (Kind::Face, format!("{}#{p}", record.id), &record.faces[p].embedding)),
        ];
        for (kind, key, vector) in samples.into_iter().flatten() {
            tried[kind as usize] += 1;
            if rt.block_on(search(store, kind, vector, &none)).contains(&key) {
                found[kind as usize] += 1;
            }
        }
    }
    let share = |kind: Kind| round3(found[kind as usize] as f64 / tried[kind as usize].max(1) as f64);
    json!({
        "searched": tried,
        "image": share(Kind::Image),
        "object": share(Kind::Object),
        "face": share(Kind::Face),
        "note": "share of stored vectors (sampled evenly) found in the top 10 of a search for themselves",
    })
}

/// Image search latency idle, while a writer streams put_batch calls, and while checkpoints
/// run back to back: readers must not wait for either.
fn readers_under_write(
    args: &Args,
    ds: &Dataset,
    store: &EmbeddedStore,
    rt: &tokio::runtime::Runtime,
    queries: &[Vec<f32>],
) -> serde_json::Value {
    // Three rounds of the queries per condition, so that p99 rests on a few hundred samples.
    let rounds = 3;
    let filter = SearchFilter::default();
    let measure = || {
        let mut ms = Vec::new();
        for _ in 0..rounds {
            for query in queries {
                let t = Instant::now();
                rt.block_on(search(store, Kind::Image, query, &filter));
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        p50_p99(ms)
    };
    let idle = measure();

    let stop = AtomicBool::new(false);
    let written = AtomicUsize::new(0);
    let (during_write, write_s) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let started = Instant::now();
            let mut next = UNDER_WRITE_FROM;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<ImageRecord> = (next..next + WRITER_BATCH as u64).map(|i| ds.image(i)).collect();
                next += WRITER_BATCH as u64;
                for outcome in rt.block_on(store.put_batch(batch)).expect("put_batch under reads") {
                    assert_eq!(outcome.expect("valid record"), PutOutcome::Created);
                }
                written.fetch_add(WRITER_BATCH, Ordering::Relaxed);
            }
            started.elapsed().as_secs_f64()
        });
        let measured = measure();
        stop.store(true, Ordering::Relaxed);
        (measured, writer.join().unwrap())
    });

    let stop = AtomicBool::new(false);
    let (during_checkpoint, checkpoints) = std::thread::scope(|scope| {
        let checkpointer = scope.spawn(|| {
            let mut seconds = Vec::new();
            let mut next = UNDER_WRITE_FROM + (1 << 36);
            // At least one checkpoint, however short the reads.
            while seconds.is_empty() || !stop.load(Ordering::Relaxed) {
                // A checkpoint of unchanged graphs saves nothing: a few new images first.
                let batch: Vec<ImageRecord> = (next..next + DIRTYING_BATCH).map(|i| ds.image(i)).collect();
                next += DIRTYING_BATCH;
                rt.block_on(store.put_batch(batch)).expect("put_batch before a checkpoint");
                let t = Instant::now();
                store.checkpoint().expect("checkpoint");
                seconds.push(t.elapsed().as_secs_f64());
            }
            seconds
        });
        let measured = measure();
        stop.store(true, Ordering::Relaxed);
        (measured, checkpointer.join().unwrap())
    });
    let written = written.into_inner();
    let row = |(p50, p99): (f64, f64)| json!({"p50_ms": round3(p50), "p99_ms": round3(p99)});
    json!({
        "search": "image, unfiltered, k=10",
        "searches_per_condition": rounds * queries.len(),
        "idle": row(idle),
        "during_put_batch": {
            "writer_batch": WRITER_BATCH,
            "images_written": written,
            "writer_images_per_s": round3(written as f64 / write_s.max(1e-9)),
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "batch_size_of_bulk_fill": args.batch,
            "search": row(during_write),
        },
        "during_checkpoint": {
            "checkpoints": checkpoints.len(),
            "images_put_before_each": DIRTYING_BATCH,
            "checkpoint_mean_s": round3(checkpoints.iter().sum::<f64>() / checkpoints.len() as f64),
            "search": row(during_checkpoint),
        },
    })
}

// ---------------------------------------------------------------------------------------
// Role "writer": keeps putting until killed with SIGKILL; "ACK <id>" after each commit

fn writer_role(args: &Args, ds: &Dataset) {
    let store = EmbeddedStore::open(args.store_config()).expect("writer: open");
    let rt = runtime();
    println!("OPENED");
    let mut next = KILLED_WRITER_FROM;
    loop {
        let batch: Vec<ImageRecord> = (next..next + WRITER_BATCH as u64).map(|i| ds.image(i)).collect();
        next += WRITER_BATCH as u64;
        let ids: Vec<String> = batch.iter().map(|r| r.id.clone()).collect();
        let outcomes = rt.block_on(store.put_batch(batch)).expect("writer: put_batch");
        // One write per batch keeps the pipe from costing the writer its speed.
        let mut acks = String::new();
        for (id, outcome) in ids.iter().zip(outcomes) {
            assert_eq!(outcome.expect("valid record"), PutOutcome::Created);
            acks.push_str(&format!("ACK {id}\n"));
        }
        print!("{acks}");
    }
}

// ---------------------------------------------------------------------------------------
// The orchestrating process

/// Bulk fill with put_batch; rates overall and per tenth of the fill.
fn build(args: &Args, ds: &Dataset, rt: &tokio::runtime::Runtime) -> serde_json::Value {
    let dir = args.store_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("remove the previous store");
    }
    std::fs::create_dir_all(&dir).expect("create the store folder");
    let config = args.store_config();
    let config_debug = format!("{config:?}");
    let store = EmbeddedStore::open(config).expect("open a new store");
    let n = args.images;
    let (mut objects, mut faces) = (0usize, 0usize);
    let (mut put_s, mut decile_put_s) = (0.0, 0.0);
    let started = Instant::now();
    let mut decile_started = Instant::now();
    let mut deciles = Vec::new();
    let mut next_decile = 1;
    let mut first = 0;
    while first < n {
        // Batches end at each tenth, so that every tenth's rate is its own.
        let last = (first + args.batch).min(n * next_decile / 10).max(first + 1);
        let batch: Vec<ImageRecord> = (first..last).into_par_iter().map(|i| ds.image(i as u64)).collect();
        objects += batch.iter().map(|r| r.objects.len()).sum::<usize>();
        faces += batch.iter().map(|r| r.faces.len()).sum::<usize>();
        let t = Instant::now();
        let outcomes = rt.block_on(store.put_batch(batch)).expect("put_batch");
        let seconds = t.elapsed().as_secs_f64();
        put_s += seconds;
        decile_put_s += seconds;
        for outcome in outcomes {
            assert_eq!(outcome.expect("valid record"), PutOutcome::Created, "generated ids are distinct");
        }
        first = last;
        // A tenth ends once `last` reaches it (several at once when N < 10).
        while next_decile <= 10 && last * 10 >= n * next_decile {
            let images = n * next_decile / 10 - n * (next_decile - 1) / 10;
            let wall = decile_started.elapsed().as_secs_f64();
            println!(
                "  fill {:>3}%: {:>9} images, {:>7.0} images/s in put_batch ({:.0} wall)",
                next_decile * 10,
                n * next_decile / 10,
                images as f64 / decile_put_s.max(1e-9),
                images as f64 / wall.max(1e-9)
            );
            deciles.push(json!({
                "upto_images": n * next_decile / 10,
                "put_batch_images_per_s": round3(images as f64 / decile_put_s.max(1e-9)),
                "wall_images_per_s": round3(images as f64 / wall.max(1e-9)),
            }));
            decile_put_s = 0.0;
            decile_started = Instant::now();
            next_decile += 1;
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    let stored = rt.block_on(store.count()).unwrap();
    assert_eq!(stored, n, "the store holds every generated image");
    let close_started = Instant::now();
    drop(store); // saves the three graphs
    let close_s = close_started.elapsed().as_secs_f64();
    json!({
        "config": config_debug,
        "sizes": {"images": n, "object_vectors": objects, "face_vectors": faces},
        "insert": {
            "batch": args.batch,
            "put_batch_seconds": round3(put_s),
            "put_batch_images_per_s": round3(n as f64 / put_s.max(1e-9)),
            "wall_seconds_with_generation": round3(wall_s),
            "wall_images_per_s": round3(n as f64 / wall_s.max(1e-9)),
            "per_tenth": deciles,
            "close_seconds": round3(close_s),
        },
        "disk_mib": round3(folder_bytes(&dir) as f64 / (1 << 20) as f64),
    })
}

/// The build numbers of the earlier run whose results are `earlier_path` (same images and
/// seed), after deleting from its store what that run's later phases added (the writers'
/// images), so that it holds exactly the N images of the exact reference again.
fn reused_build(args: &Args, ds: &Dataset, earlier_path: &Path, rt: &tokio::runtime::Runtime) -> serde_json::Value {
    let earlier: serde_json::Value = std::fs::read(earlier_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| usage(&format!("--reuse-from {}: not a results file", earlier_path.display())));
    if earlier["images"] != json!(args.images) || earlier["seed"] != json!(args.seed) {
        usage("--reuse-from: the earlier run measured other --images or --seed");
    }
    let store = EmbeddedStore::open(args.store_config()).expect("open the store to reuse");
    let measured: HashSet<String> = (0..args.images as u64).into_par_iter().map(|i| ds.image_id(i)).collect();
    let added: Vec<String> = store.image_ids().into_iter().filter(|id| !measured.contains(id)).collect();
    for id in &added {
        assert!(rt.block_on(store.delete(id)).expect("delete"), "{id} was listed");
    }
    let stored = rt.block_on(store.count()).unwrap();
    assert_eq!(stored, args.images, "the reused store holds every generated image");
    drop(store);
    println!("  reusing the store of {} ({} later images deleted)", earlier_path.display(), added.len());
    json!({
        "config": format!("{:?}", args.store_config()),
        "sizes": earlier["sizes"],
        "insert": earlier["insert"],
        "disk_mib": earlier["disk_mib_after_build"],
        "reused_from": earlier_path.display().to_string(),
    })
}

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map_or(0, |entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

/// Runs this binary again in another role.
fn child(args: &Args, role: &str, extra: &[String]) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command.args(args.child_args()).args(["--role", role]).args(extra);
    command
}

/// Recall, short answers and selectivity per kind and filter, from the query report and
/// the exact reference.
fn score_rows(
    ds: &Dataset,
    filters: &[NamedFilter],
    report: &QueryReport,
    reference: &Reference,
    queries: usize,
) -> Vec<serde_json::Value> {
    let key = |kind: Kind, &(_, index, part): &(f32, u64, u32)| match kind {
        Kind::Image => ds.image_id(index),
        _ => format!("{}#{part}", ds.image_id(index)),
    };
    report
        .rows
        .iter()
        .map(|row| {
            let k = KINDS.iter().position(|&kind| kind == row.kind).unwrap();
            let f = filters.iter().position(|named| named.name == row.filter).unwrap();
            let matching = reference.matching[k][f];
            let (mut recall_sum, mut short) = (0.0, 0);
            // [synthetic, copied from --source]: (recall sum, queries)
            let mut by_origin = [(0.0, 0); 2];
            for (q, hits) in row.hits.iter().enumerate() {
                let exact: HashSet<String> =
                    reference.top[k][q * filters.len() + f].0.iter().map(|e| key(row.kind, e)).collect();
                let found = hits.iter().filter(|h| exact.contains(*h)).count();
                // Nothing to find and nothing returned is a perfect answer.
                let recall = if exact.is_empty() { 1.0 } else { found as f64 / exact.len() as f64 };
                recall_sum += recall;
                let origin = &mut by_origin[usize::from(ds.query_source(row.kind, q).is_some())];
                origin.0 += recall;
                origin.1 += 1;
                if hits.len() < (K as u64).min(matching) as usize {
                    short += 1;
                }
            }
            let mut out = json!({
                "kind": row.kind.name(),
                "filter": row.filter,
                "selectivity": matching as f64 / reference.totals[k].max(1) as f64,
                "matching": matching,
                "p50_ms": round3(row.p50_ms),
                "p99_ms": round3(row.p99_ms),
                "recall_at_10": round3(recall_sum / queries as f64),
                "short_results": short,
            });
            // With --source, recall of the two halves apart: copies of a few hundred real
            // records crowd together far more than the synthetic clusters.
            if by_origin[1].1 > 0 {
                out["recall_at_10_synthetic_queries"] = json!(round3(by_origin[0].0 / by_origin[0].1.max(1) as f64));
                out["recall_at_10_source_queries"] = json!(round3(by_origin[1].0 / by_origin[1].1 as f64));
            }
            out
        })
        .collect()
}

/// kill -9 of a writer in the middle of its puts, then the timed reopen; every
/// acknowledged id must be there.
fn reopen_after_kill(args: &Args, rt: &tokio::runtime::Runtime) -> serde_json::Value {
    let mut writer = child(args, "writer", &[]).stdout(Stdio::piped()).spawn().expect("start the writer");
    let lines = BufReader::new(writer.stdout.take().unwrap()).lines();
    let spawned = Instant::now();
    let mut first_ack = None;
    let mut acknowledged = Vec::new();
    for line in lines {
        let line = line.expect("writer output");
        if let Some(id) = line.strip_prefix("ACK ") {
            acknowledged.push(id.to_owned());
            let since = *first_ack.get_or_insert_with(Instant::now);
            if since.elapsed().as_secs_f64() >= args.writer_seconds {
                break;
            }
        }
    }
    let writing_s = first_ack.map_or(0.0, |t| t.elapsed().as_secs_f64());
    writer.kill().expect("SIGKILL the writer"); // no destructor, no final checkpoint
    let status = writer.wait().unwrap();
    assert!(!acknowledged.is_empty(), "the writer acknowledged nothing (exit {status})");
    let writer_open_s = spawned.elapsed().as_secs_f64() - writing_s;

    let started = Instant::now();
    let store = EmbeddedStore::open(args.store_config()).expect("reopen after kill -9");
    let open_s = started.elapsed().as_secs_f64();
    let recovery = format!("{:?}", store.recovery());
    let lost: Vec<&String> =
        acknowledged.iter().filter(|id| rt.block_on(store.get(id)).expect("get").is_none()).collect();
    if !lost.is_empty() {
        panic!("{} of {} acknowledged ids lost after kill -9, e.g. {}", lost.len(), acknowledged.len(), lost[0]);
    }
    let count = rt.block_on(store.count()).unwrap();
    let pending_after_open = store.pending_vectors();
    // Searches run while the graphs catch up; how long until they hold every vector.
    let mut during_catch_up = Vec::new();
    let query =
        rt.block_on(store.get(&acknowledged[acknowledged.len() / 2])).expect("get").expect("acknowledged").embedding;
    while store.pending_vectors() > 0 {
        let searched = Instant::now();
        rt.block_on(store.search_images(&query, &SearchFilter::default(), Page { k: 10, offset: 0 })).expect("search");
        during_catch_up.push(searched.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(50));
    }
    let caught_up_s = started.elapsed().as_secs_f64();
    let close_started = Instant::now();
    drop(store); // saves the graphs, so the gateway that follows loads them
    json!({
        "writer_batch": WRITER_BATCH,
        "writer_open_and_startup_s": round3(writer_open_s),
        "writing_s": round3(writing_s),
        "acknowledged": acknowledged.len(),
        "open_s": round3(open_s),
        "recovery": recovery,
        "pending_vectors_after_open": pending_after_open,
        "graphs_caught_up_s": round3(caught_up_s),
        "image_searches_during_catch_up": during_catch_up.len(),
        "image_search_ms_during_catch_up": (!during_catch_up.is_empty()).then(|| {
            let (p50, p99) = p50_p99(during_catch_up);
            json!({"p50_ms": round3(p50), "p99_ms": round3(p99)})
        }),
        "all_acknowledged_present": true,
        "images_after": count,
        "close_s": round3(close_started.elapsed().as_secs_f64()),
    })
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|rest| rest.split(':').nth(1)))
        .map_or("unknown".to_owned(), |m| m.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0.0);
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_gib": round3(memory_kb / (1 << 20) as f64),
    })
}

fn orchestrate(args: &Args, ds: &Dataset) {
    let rt = runtime();
    let filters = filters();
    let total = Instant::now();
    println!("store_scale: {} images into {} (seed {})", args.images, args.store_dir().display(), args.seed);

    let build = match &args.reuse_from {
        Some(earlier) => reused_build(args, ds, earlier, &rt),
        None => build(args, ds, &rt),
    };
    println!("  built in {:.0} s; {}", total.elapsed().as_secs_f64(), build["insert"]);

    // The query phase in a fresh process: clean reopen, memory, searches, reads under write.
    let report_path = args.data_dir.join("store_scale_query_report.json");
    let status = child(args, "query", &["--report".into(), report_path.display().to_string()])
        .status()
        .expect("start the query process");
    assert!(status.success(), "query process failed: {status}");
    let report: QueryReport = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    std::fs::remove_file(&report_path).ok();
    println!("  queries done ({:.0} s so far)", total.elapsed().as_secs_f64());

    let reference_started = Instant::now();
    let queries = all_queries(ds, args.queries);
    let reference = exact_reference(ds, args.images, &filters, &queries);
    let reference_s = reference_started.elapsed().as_secs_f64();
    println!("  exact reference in {reference_s:.0} s");
    let rows = score_rows(ds, &filters, &report, &reference, args.queries);

    let killed = reopen_after_kill(args, &rt);
    println!("  kill -9 reopen: {killed}");

    let result = json!({
        "machine": machine(),
        "images": args.images,
        "seed": args.seed,
        "source": args.source.as_ref().map(|s| s.display().to_string()),
        "source_records": ds.sources.len(),
        "store_dir": args.store_dir().display().to_string(),
        "queries_per_row": args.queries,
        "k": K,
        "config": build["config"],
        "build_reused_from": build.get("reused_from"),
        "sizes": build["sizes"],
        "disk_mib_after_build": build["disk_mib"],
        "insert": build["insert"],
        "search": rows,
        "memory": report.memory,
        "reopen": {
            "clean": {"open_s": round3(report.open_s), "recovery": report.recovery},
            "after_kill_9": killed,
        },
        "self_search": report.self_search,
        "search_under_write": report.under_write,
        "exact_reference_s": round3(reference_s),
        "total_s": round3(total.elapsed().as_secs_f64()),
    });
    print_summary(&result);
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent).expect("create the results folder");
    }
    let mut text = serde_json::to_string_pretty(&result).unwrap();
    text.push('\n');
    std::fs::write(&args.out, text).expect("write the results");
    println!("wrote {}", args.out.display());
}

fn print_summary(result: &serde_json::Value) {
    println!();
    println!(
        "{:<7} {:<28} {:>11} {:>9} {:>8} {:>8} {:>8} {:>6}",
        "kind", "filter", "selectivity", "matching", "p50 ms", "p99 ms", "recall", "short"
    );
    for row in result["search"].as_array().unwrap() {
        println!(
            "{:<7} {:<28} {:>10.4}% {:>9} {:>8.3} {:>8.3} {:>8.3} {:>6}",
            row["kind"].as_str().unwrap(),
            row["filter"].as_str().unwrap(),
            row["selectivity"].as_f64().unwrap() * 100.0,
            row["matching"],
            row["p50_ms"].as_f64().unwrap(),
            row["p99_ms"].as_f64().unwrap(),
            row["recall_at_10"].as_f64().unwrap(),
            row["short_results"],
        );
    }
    let insert = &result["insert"];
    println!(
        "\ninsert: {} images/s in put_batch ({} wall with generation); close {} s",
        insert["put_batch_images_per_s"], insert["wall_images_per_s"], insert["close_seconds"]
    );
    println!("memory (store's share, MiB): {}", result["memory"]);
    println!("reopen clean: {}", result["reopen"]["clean"]);
    println!("reopen after kill -9: {}", result["reopen"]["after_kill_9"]);
    println!("self search: {}", result["self_search"]);
    println!("search under write: {}", result["search_under_write"]);
}

fn main() {
    let args = Args::parse();
    let sources = args.source.as_deref().map(load_sources).unwrap_or_default();
    let ds = Dataset::new(args.seed, args.images, sources);
    match args.role.as_deref() {
        None => orchestrate(&args, &ds),
        Some("query") => query_role(&args, &ds),
        Some("writer") => writer_role(&args, &ds),
        Some(other) => usage(&format!("unknown role {other}")),
    }
}
