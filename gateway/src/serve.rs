//! `gateway serve`: loads the rerank plugin if one is configured, opens the store, the
//! photo folder, the tokenizer and the Triton channel, binds the listener and serves until
//! SIGINT/SIGTERM, then drains requests in flight for at most `server.shutdown_timeout_s`
//! and checkpoints the embedded store.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clip_tokenizer::ClipTokenizer;
use tokio::net::TcpListener;
use triton_client::{ClientConfig, ProbeConfig, TritonPool};
use visual_store::embedded::{CheckpointPolicy, EmbeddedConfig, EmbeddedStore};
use visual_store::opensearch::{OpenSearchConfig, OpenSearchStore};
use visual_store::{QueryLimits, Store, StoreError};

use crate::blobs::BlobStore;
use crate::config::{GatewayConfig, StoreKind};
use crate::http::access::AccessControl;
use crate::http::server::serve_http1;
use crate::http::{app, ops_app, AppState};
use crate::metrics::Metrics;
use crate::plugin::PluginScorer;
use crate::rerank::Scorer;
use crate::triton::TritonInference;

pub async fn serve(config: GatewayConfig) -> anyhow::Result<()> {
    config.validate()?;
    // A configured rerank library that cannot be used stops the start first, before the
    // store is opened or anything listens.
    let scorer = match &config.faces.rerank_library {
        None => Scorer::Native,
        Some(path) => Scorer::Plugin(PluginScorer::load(path).context("faces.rerank_library")?),
    };
    tracing::info!(scorer = %scorer.name(), "face rerank scorer");
    let data_dir = &config.store.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;

    let (store, embedded) = open_store(&config).await?;
    let blobs = BlobStore::open(data_dir.join("photos")).context("opening the photo folder")?;
    let tokenizer_dir = &config.models.tokenizer_dir;
    let tokenizer =
        ClipTokenizer::from_files(tokenizer_dir.join("clip-vocab.json"), tokenizer_dir.join("clip-merges.txt"))
            .with_context(|| format!("loading the CLIP tokenizer from {}", tokenizer_dir.display()))?;
    let triton = &config.triton;
    let client = ClientConfig {
        request_timeout: triton.request_timeout(),
        call_timeout: triton.call_timeout(),
        connect_timeout: triton.connect_timeout(),
        max_retries: triton.max_retries,
        initial_backoff: triton.initial_backoff(),
        ..ClientConfig::default()
    };
    let probe = ProbeConfig { interval: triton.probe_interval(), timeout: triton.probe_timeout() };
    let pool = TritonPool::new(&triton.endpoints, client, probe)
        .with_context(|| format!("creating the Triton clients for triton.endpoints {:?}", triton.endpoints))?;
    let metrics = Arc::new(Metrics::new());
    let inference =
        Arc::new(TritonInference::new(pool, config.models.clone(), config.faces.clone(), tokenizer, metrics.clone()));

    let access =
        Arc::new(AccessControl::new(&config.auth, config.server.listen).map_err(anyhow::Error::msg).context("auth")?);
    let listener =
        TcpListener::bind(config.server.listen).await.with_context(|| format!("binding {}", config.server.listen))?;
    let ops_listener = match config.server.ops_listen {
        Some(address) => {
            Some(TcpListener::bind(address).await.with_context(|| format!("binding server.ops_listen {address}"))?)
        }
        None => None,
    };
    let address = listener.local_addr()?;
    let shutdown_timeout = Duration::from_secs(config.server.shutdown_timeout_s);
    let header_read_timeout = Duration::from_millis(config.server.header_read_timeout_ms);
    tracing::info!(%address, store = store.kind(), triton = ?config.triton.endpoints, keys = access.keys.enabled(), "gateway listening");
    println!("gateway listening on http://{address}");

    let state = Arc::new(AppState::new(config, store, inference, blobs, metrics).with_scorer(scorer));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        stop.wait_for(|stop| *stop).await.ok();
    };
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(serve_http1(listener, app(state.clone(), access), header_read_timeout, stopped(stop_rx.clone())));
    if let Some(ops_listener) = ops_listener {
        println!("gateway health and metrics on http://{}", ops_listener.local_addr()?);
        servers.spawn(serve_http1(ops_listener, ops_app(state), header_read_timeout, stopped(stop_rx)));
    }
    let signal = shutdown_signal().await;
    tracing::info!(signal, "shutting down");
    stop_tx.send(true).ok();
    let drained = async { while servers.join_next().await.is_some() {} };
    if tokio::time::timeout(shutdown_timeout, drained).await.is_err() {
        tracing::warn!(?shutdown_timeout, "requests still in flight at the shutdown deadline; leaving them");
        servers.abort_all();
    }
    if let Some(embedded) = embedded {
        // Every put is already durable; the checkpoint only spares the next start a graph rebuild.
        tokio::task::spawn_blocking(move || embedded.checkpoint()).await?.context("checkpointing the store")?;
    }
    Ok(())
}

/// The configured store; the embedded one is also returned concretely for its checkpoint.
async fn open_store(config: &GatewayConfig) -> anyhow::Result<(Arc<dyn Store>, Option<EmbeddedStore>)> {
    let limits = QueryLimits { max_k: config.search.max_k, max_window: config.search.max_window };
    match config.store.kind {
        StoreKind::Embedded => {
            let path = config.store.data_dir.join("store");
            let interval = config.store.checkpoint_interval_s;
            let checkpoint = CheckpointPolicy {
                after_changes: config.store.checkpoint_after_changes,
                interval: (interval > 0).then(|| std::time::Duration::from_secs(interval)),
            };
            let store_config = EmbeddedConfig {
                dimension: Some(config.models.embedding_dim),
                limits,
                encoding: config.store.vector_encoding.into(),
                checkpoint,
                object_graph_shards: config.store.object_graph_shards,
                ..EmbeddedConfig::new(&path)
            };
            let store = EmbeddedStore::open_async(store_config)
                .await
                .with_context(|| format!("opening the embedded store in {}", path.display()))?;
            tracing::info!(path = %path.display(), recovery = ?store.recovery(), "embedded store open");
            Ok((Arc::new(store.clone()), Some(store)))
        }
        StoreKind::Opensearch => {
            let store = &config.store;
            let (urls, index) = (store.opensearch_urls.join(","), &store.opensearch_index);
            let store_config = OpenSearchConfig {
                limits,
                index_settings: store.opensearch_index_settings.clone(),
                ..OpenSearchConfig::new(&urls, index, config.models.embedding_dim)
            };
            let context = || format!("connecting to OpenSearch at {urls} (index {index})");
            let store = OpenSearchStore::new(store_config).with_context(context)?;
            match store.ensure_index().await {
                Ok(()) => {}
                // Unreachable now: serve anyway, /health says not ready and every store call
                // answers 503 until the node is back (the index is then created or checked).
                Err(StoreError::Unavailable(reason)) => {
                    tracing::warn!(%reason, "OpenSearch is not reachable; serving as not ready until it is")
                }
                // A wrong mapping does not heal by waiting: refuse to start.
                Err(err) => return Err(err).with_context(context),
            }
            Ok((Arc::new(store), None))
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, naming which.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => "SIGINT",
        _ = terminate => "SIGTERM",
    }
}
