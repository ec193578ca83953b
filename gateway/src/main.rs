//! The `gateway` binary: `gateway serve` (the HTTP service, `gateway::serve`) and
//! `gateway ingest <dir>` (the uploader, a client of that service: the `uploader` crate), and
//! `gateway hash-key` (an API key's hash for the config).

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "gateway", version, about = "Visual search gateway: HTTP service and ingest client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve(gateway::cli::ServeArgs),
    /// Upload every photo of a folder (recursively) to a running gateway.
    Ingest(uploader::IngestArgs),
    /// Print the hash of an API key read from stdin, for auth.read_key_hashes or
    /// auth.write_key_hashes.
    HashKey,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tower_http=info")))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => gateway::serve::serve(args.resolve()?).await,
        Command::Ingest(args) => uploader::ingest(args).await,
        Command::HashKey => {
            let mut key = String::new();
            std::io::stdin().read_line(&mut key)?;
            println!("{}", gateway::http::access::hash_key(key.trim()));
            Ok(())
        }
    }
}
