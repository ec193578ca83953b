//! `gateway ingest <dir>`: uploads a folder of photos to a running gateway with bounded
//! concurrency, a progress bar, optional resume (asking the gateway by content hash), and a
//! report of every file that failed. An HTTP client only: it shares no code with the server,
//! whose API (POST /ingest, GET /images/{id}) is its contract.
//!
//! Layer: a client with no workspace dependencies. Imported only by the `gateway` binary
//! (`main.rs`), never by the gateway library.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures_util::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Folder of photos (.jpg, .jpeg, .png, .webp), searched recursively.
    pub dir: PathBuf,
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "GATEWAY_URL")]
    pub url: String,
    /// Uploads in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Skip photos the gateway already stores (asked by content hash), without uploading them.
    #[arg(long)]
    pub resume: bool,
    /// Comma-separated tags given to every photo.
    #[arg(long)]
    pub tags: Option<String>,
    /// Seconds one upload may take.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// A write key of the gateway, when it has keys (sent as a bearer token).
    #[arg(long, env = "GATEWAY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// Every photo under `dir`, sorted, so runs and resumes go in the same order.
pub fn find_photos(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut photos = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                photos.push(path);
            }
        }
    }
    photos.sort();
    Ok(photos)
}

#[derive(Debug, PartialEq)]
enum FileOutcome {
    Created,
    AlreadyStored,
    Skipped,
}

/// Uploads all photos; returns an error (non-zero exit) when any file failed.
pub async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    let photos = find_photos(&args.dir)?;
    anyhow::ensure!(!photos.is_empty(), "no photos (.jpg, .jpeg, .png, .webp) under {}", args.dir.display());
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &args.api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.trim()))
            .context("--api-key is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_s))
        .default_headers(headers)
        .build()
        .context("building the HTTP client")?;
    let base = args.url.trim_end_matches('/').to_owned();

    let bar = ProgressBar::new(photos.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("valid template"),
    );
    let outcomes: Vec<(PathBuf, anyhow::Result<FileOutcome>)> = stream::iter(photos)
        .map(|path| {
            let (client, base, bar, tags) = (&client, &base, &bar, args.tags.as_deref());
            async move {
                let outcome = upload(client, base, &path, tags, args.resume).await;
                bar.inc(1);
                (path, outcome)
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    bar.finish_and_clear();

    let count = |wanted: FileOutcome| outcomes.iter().filter(|(_, o)| o.as_ref().is_ok_and(|o| *o == wanted)).count();
    let failures: Vec<_> = outcomes.iter().filter_map(|(p, o)| o.as_ref().err().map(|e| (p, e))).collect();
    println!(
        "{} photos: {} created, {} already stored, {} skipped (resume), {} failed",
        outcomes.len(),
        count(FileOutcome::Created),
        count(FileOutcome::AlreadyStored),
        count(FileOutcome::Skipped),
        failures.len()
    );
    for (path, error) in &failures {
        eprintln!("FAILED {}: {error:#}", path.display());
    }
    anyhow::ensure!(failures.is_empty(), "{} of {} photos failed", failures.len(), outcomes.len());
    Ok(())
}

/// Attempts per file while the gateway is unreachable or answers 503 (Triton starting).
const ATTEMPTS: u32 = 4;

async fn upload(
    client: &reqwest::Client,
    base: &str,
    path: &Path,
    tags: Option<&str>,
    resume: bool,
) -> anyhow::Result<FileOutcome> {
    let bytes = tokio::fs::read(path).await.with_context(|| format!("reading {}", path.display()))?;
    if resume {
        let id = hex::encode(Sha256::digest(&bytes));
        let response = client.get(format!("{base}/images/{id}")).send().await.context("asking the gateway")?;
        if response.status() == StatusCode::OK {
            return Ok(FileOutcome::Skipped);
        }
    }
    let filename = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        let mut form = reqwest::multipart::Form::new()
            .part("image", reqwest::multipart::Part::bytes(bytes.clone()).file_name(filename.clone()));
        if let Some(tags) = tags {
            form = form.text("tags", tags.to_owned());
        }
        let result = client.post(format!("{base}/ingest")).multipart(form).send().await;
        let retryable = match &result {
            Err(err) => err.is_connect() || err.is_timeout(),
            Ok(response) => response.status() == StatusCode::SERVICE_UNAVAILABLE,
        };
        if retryable && attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            continue;
        }
        let response = result.context("uploading")?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        return match status {
            StatusCode::CREATED => Ok(FileOutcome::Created),
            StatusCode::OK => Ok(FileOutcome::AlreadyStored),
            _ => Err(anyhow::anyhow!(
                "HTTP {status}: {}",
                body.get("error").and_then(|e| e.as_str()).unwrap_or("(no error message)")
            )),
        };
    }
    unreachable!("the last attempt always returns")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: IngestArgs,
    }

    #[test]
    fn ingest_flags_parse() {
        let cli = Command::try_parse_from([
            "ingest",
            "photos",
            "--url",
            "http://127.0.0.1:1",
            "--concurrency",
            "8",
            "--resume",
        ])
        .unwrap();
        let args = cli.args;
        assert_eq!((args.concurrency, args.resume, args.url.as_str()), (8, true, "http://127.0.0.1:1"));
        assert!(Command::try_parse_from(["ingest", "photos", "--concurrency", "many"]).is_err());
    }

    #[test]
    fn finds_photos_recursively_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for name in ["b.JPG", "a.png", "sub/c.webp", "notes.txt"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names: Vec<String> = find_photos(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.png", "b.JPG", "sub/c.webp"]);
    }
}
