//! The flags of `gateway serve`: each flag (or its `GATEWAY_*` variable) overrides the
//! TOML config. The binary (`main.rs`) puts them beside the uploader's `gateway ingest`.

use std::path::PathBuf;

use clap::Args;

use crate::config::{GatewayConfig, StoreKind};
use crate::http::access::{hash_key, MIN_KEY_CHARS};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file; every key is optional.
    #[arg(long, env = "GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, env = "GATEWAY_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Triton's gRPC endpoint, e.g. http://127.0.0.1:8001.
    #[arg(long, env = "GATEWAY_TRITON_ENDPOINT")]
    pub triton: Option<String>,
    /// Folder of the embedded store and the uploaded photos.
    #[arg(long, env = "GATEWAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Which store: embedded or opensearch.
    #[arg(long, env = "GATEWAY_STORE", value_enum)]
    pub store: Option<StoreKind>,
    /// OpenSearch node URLs, comma-separated (store.opensearch_urls).
    #[arg(long, env = "GATEWAY_OPENSEARCH_URL")]
    pub opensearch_url: Option<String>,
    /// Folder with clip-vocab.json and clip-merges.txt.
    #[arg(long, env = "GATEWAY_TOKENIZER_DIR")]
    pub tokenizer_dir: Option<PathBuf>,
    /// Store each ingested photo's faces (faces.index_on_ingest).
    #[arg(long, env = "GATEWAY_INDEX_FACES")]
    pub index_faces: Option<bool>,
    /// Shared library with the rerank C ABI replacing the native scorer (faces.rerank_library).
    #[arg(long, env = "GATEWAY_RERANK_LIBRARY")]
    pub rerank_library: Option<PathBuf>,
    /// Address serving /health and /metrics without keys (server.ops_listen).
    #[arg(long, env = "GATEWAY_OPS_LISTEN")]
    pub ops_listen: Option<std::net::SocketAddr>,
    /// Read keys in the clear, comma-separated; hashed at start (auth.read_key_hashes).
    #[arg(long, env = "GATEWAY_READ_KEYS", hide_env_values = true, value_delimiter = ',')]
    pub read_keys: Vec<String>,
    /// Write keys in the clear, comma-separated; hashed at start (auth.write_key_hashes).
    #[arg(long, env = "GATEWAY_WRITE_KEYS", hide_env_values = true, value_delimiter = ',')]
    pub write_keys: Vec<String>,
    /// Serve a non-loopback address without write keys (auth.allow_unauthenticated).
    #[arg(long)]
    pub allow_unauthenticated: bool,
}

/// Plain keys hashed for the config, refusing short ones (they would be guessable).
fn hashed_keys(keys: &[String], name: &str) -> anyhow::Result<Vec<String>> {
    keys.iter()
        .map(|key| key.trim())
        .filter(|key| !key.is_empty())
        .map(|key| {
            anyhow::ensure!(
                key.chars().count() >= MIN_KEY_CHARS,
                "{name}: a key is shorter than {MIN_KEY_CHARS} characters; use e.g. `openssl rand -hex 16`"
            );
            Ok(hash_key(key))
        })
        .collect()
}

impl ServeArgs {
    /// The config file (or defaults) with the flags and environment on top.
    pub fn resolve(self) -> anyhow::Result<GatewayConfig> {
        let mut config = GatewayConfig::load(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(triton) = self.triton {
            config.triton.endpoint = triton;
        }
        if let Some(data_dir) = self.data_dir {
            config.store.data_dir = data_dir;
        }
        if let Some(store) = self.store {
            config.store.kind = store;
        }
        if let Some(urls) = self.opensearch_url {
            config.store.opensearch_urls = visual_store::opensearch::split_urls(&urls);
        }
        if let Some(dir) = self.tokenizer_dir {
            config.models.tokenizer_dir = dir;
        }
        if let Some(index_faces) = self.index_faces {
            config.faces.index_on_ingest = index_faces;
        }
        if let Some(library) = self.rerank_library {
            config.faces.rerank_library = Some(library);
        }
        if let Some(ops_listen) = self.ops_listen {
            config.server.ops_listen = Some(ops_listen);
        }
        config.auth.read_key_hashes.extend(hashed_keys(&self.read_keys, "GATEWAY_READ_KEYS")?);
        config.auth.write_key_hashes.extend(hashed_keys(&self.write_keys, "GATEWAY_WRITE_KEYS")?);
        config.auth.allow_unauthenticated |= self.allow_unauthenticated;
        // Validated once, by `serve`, which every config passes through.
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9000\"\n[search]\nmax_k = 20\n").unwrap();
        let cli = Command::try_parse_from([
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--triton",
            "http://127.0.0.1:7001",
            "--store",
            "embedded",
        ])
        .unwrap();
        let config = cli.args.resolve().unwrap();
        assert_eq!(config.server.listen.port(), 9000);
        assert_eq!(config.search.max_k, 20);
        assert_eq!(config.triton.endpoint, "http://127.0.0.1:7001");
    }

    #[test]
    fn plain_keys_are_hashed_and_short_ones_refused() {
        let key = "0123456789abcdef0123456789abcdef";
        let cli = Command::try_parse_from(["serve", "--write-keys", &format!("{key}, ")]).unwrap();
        let config = cli.args.resolve().unwrap();
        assert_eq!(config.auth.write_key_hashes, vec![hash_key(key)]);
        let cli = Command::try_parse_from(["serve", "--read-keys", "short"]).unwrap();
        assert!(cli.args.resolve().unwrap_err().to_string().contains("shorter than"));
    }

    #[test]
    fn unknown_store_is_refused() {
        assert!(Command::try_parse_from(["serve", "--store", "sqlite"]).is_err());
        let cli = Command::try_parse_from(["serve", "--store", "opensearch"]).unwrap();
        assert_eq!(cli.args.store, Some(StoreKind::Opensearch));
    }

    #[test]
    fn opensearch_nodes_come_comma_separated() {
        let urls = "http://127.0.0.1:9201, http://127.0.0.1:9202,,http://127.0.0.1:9203";
        let cli = Command::try_parse_from(["serve", "--store", "opensearch", "--opensearch-url", urls]).unwrap();
        let config = cli.args.resolve().unwrap();
        assert_eq!(
            config.store.opensearch_urls,
            ["http://127.0.0.1:9201", "http://127.0.0.1:9202", "http://127.0.0.1:9203"]
        );
        let cli = Command::try_parse_from(["serve", "--store", "opensearch", "--opensearch-url", " , "]).unwrap();
        let error = cli.args.resolve().unwrap().validate().unwrap_err();
        assert!(error.to_string().contains("store.opensearch_urls"), "{error}");
    }
}
