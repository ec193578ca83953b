//! The flags of `gateway serve`: each flag (or its `GATEWAY_*` variable) overrides the
//! TOML config. The binary (`main.rs`) puts them beside the uploader's `gateway ingest`.

use std::path::PathBuf;

use clap::Args;

use crate::config::{GatewayConfig, StoreKind};

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
        if let Some(url) = self.opensearch_url {
            config.store.opensearch_url = url;
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
    fn unknown_store_is_refused() {
        assert!(Command::try_parse_from(["serve", "--store", "sqlite"]).is_err());
        let cli = Command::try_parse_from(["serve", "--store", "opensearch"]).unwrap();
        assert_eq!(cli.args.store, Some(StoreKind::Opensearch));
    }
}
