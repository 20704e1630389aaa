//! `confab bench`: load generators that drive a real server over loopback
//! and print one JSON line of results. Numbers are printed, never asserted.

mod compression;
mod fanout;
mod idle;
mod p2p;
mod pairs;
mod server;
mod ws;

use clap::Subcommand;

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// N/2 sender/receiver pairs: throughput, loss, duplicates and latency.
    Pairs(pairs::PairsArgs),
    /// One sender into a group of N members, each on its own connection:
    /// fan-out throughput, loss and latency.
    Fanout(fanout::FanoutArgs),
    /// The same messages with and without WebSocket permessage-deflate:
    /// wire bytes and CPU time per message.
    Compression(compression::CompressionArgs),
    /// N idle authenticated connections: server memory per connection.
    Idle(idle::IdleArgs),
    /// Two P2P peers in this process: envelopes acked per second and ack
    /// latency, direct or through a relay.
    P2p(p2p::P2pArgs),
    /// (internal) one process's share of `bench idle` connections.
    #[command(hide = true)]
    IdleWorker(idle::WorkerArgs),
}

/// Runs a benchmark.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Pairs(args) => pairs::run(args).await,
        BenchCommand::Fanout(args) => fanout::run(args).await,
        BenchCommand::Compression(args) => compression::run(args).await,
        BenchCommand::Idle(args) => idle::run(args).await,
        BenchCommand::P2p(args) => p2p::run(args).await,
        BenchCommand::IdleWorker(args) => idle::worker(args).await,
    }
}
