//! `gateway serve` and `gateway ingest <dir>`; see `gateway::cli`.

use clap::Parser;
use gateway::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tower_http=info")))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => gateway::serve::serve(args.resolve()?).await,
        Command::Ingest(args) => gateway::cli::ingest(args).await,
    }
}
