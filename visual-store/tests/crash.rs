//! kill -9 during ingest: every put the embedded store acknowledged is there after reopen.
//! The test binary re-invokes itself as the writer (env CRASH_WRITER_DIR selects the
//! writer role), which prints "ACK <id>" after each put returns.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use visual_store::embedded::{EmbeddedConfig, EmbeddedStore};
use visual_store::{PutOutcome, SearchFilter, Store};

const WRITER_ENV: &str = "CRASH_WRITER_DIR";

/// The writer role: puts records forever (batches of 1 and 4) until killed.
#[tokio::test]
async fn crash_writer() {
    let Ok(dir) = std::env::var(WRITER_ENV) else { return };
    let store = EmbeddedStore::open_async(EmbeddedConfig::new(dir)).await.unwrap();
    let mut rng = common::Rng::new(99);
    for batch in 0.. {
        let records: Vec<_> = (0..1 + batch % 4)
            .map(|i| {
                let mut record = common::documents()[0].clone();
                record.id = format!("crash-{batch}-{i}");
                record.embedding = rng.unit_vector(common::DIMENSION);
                record
            })
            .collect();
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let outcomes = store.put_batch(records).await.unwrap();
        for (id, outcome) in ids.iter().zip(outcomes) {
            assert_eq!(outcome.unwrap(), PutOutcome::Created);
            println!("ACK {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_ingest_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_writer", "--nocapture", "--test-threads", "1"])
        .env(WRITER_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acknowledged = Vec::new();
    for line in BufReader::new(writer.stdout.take().unwrap()).lines() {
        if let Some(id) = line.unwrap().strip_prefix("ACK ") {
            acknowledged.push(id.to_owned());
        }
        if acknowledged.len() == 150 {
            writer.kill().unwrap(); // SIGKILL: no destructor, no checkpoint
            break;
        }
    }
    writer.wait().unwrap();
    assert_eq!(acknowledged.len(), 150, "the writer stopped before 150 acknowledgements");

    let store = EmbeddedStore::open_async(EmbeddedConfig::new(dir.path())).await.unwrap();
    for id in &acknowledged {
        assert!(store.get(id).await.unwrap().is_some(), "acknowledged {id} lost");
    }
    assert!(store.count().await.unwrap() >= acknowledged.len());
    // The graphs were rebuilt from the records: a stored vector finds its image.
    let record = store.get(&acknowledged[100]).await.unwrap().unwrap();
    let hits = store
        .search_images(&record.embedding, &SearchFilter::default(), visual_store::Page { k: 1, offset: 0 })
        .await
        .unwrap();
    assert_eq!(hits[0].image_id, record.id);
}
