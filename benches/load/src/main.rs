//! switchyard-load: end-to-end load generator for switchyard. See README.md.

mod cli;
mod client;
mod http;
mod live;
mod nats;
mod parse;
mod procfs;
mod rawws;
mod redis;
mod report;
mod scenario;
mod svg;
mod track;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::cli::{Cli, FanoutArgs, LatencyArgs, Scenario, SubscribeVia};
use crate::client::{ClientKind, Connector, Proto, Target};
use crate::scenario::Ctx;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(lost_or_failed) => std::process::exit(if lost_or_failed { 2 } else { 0 }),
        Err(e) => {
            eprintln!("switchyard-load: {e}");
            std::process::exit(1);
        }
    }
}

/// What the NATS target (`nats+ws://`) supports: the scenarios that only subscribe, publish
/// and receive, over the raw client.
fn check_nats(cli: &Cli) -> Result<()> {
    let c = &cli.common;
    if c.batch || c.subscribe_via != SubscribeVia::Frame || c.client != ClientKind::Raw {
        return Err("nats+ws:// works with the raw client and subscribe frames only \
                    (no --batch, --subscribe-via query or --client tungstenite)"
            .into());
    }
    match &cli.scenario {
        Scenario::Fanout(FanoutArgs { publish, .. })
        | Scenario::Latency(LatencyArgs { publish, .. })
            if publish.via_http =>
        {
            Err("nats+ws:// has no --via-http".into())
        }
        Scenario::Fanout(_)
        | Scenario::Latency(_)
        | Scenario::Rooms(_)
        | Scenario::Connections(_) => Ok(()),
        _ => Err("nats+ws:// supports fanout, latency, rooms and connections".into()),
    }
}

/// Runs the scenario; Ok(true) when messages were lost, connections failed, clients did not
/// recover or presence failed its checks (exit code 2, so scripts and the smoke test notice
/// without parsing output).
fn run(cli: Cli) -> Result<bool> {
    let conns = cli.scenario.connections();
    // Every connection is one descriptor; leave room for the runtime and files.
    let nofile = procfs::raise_nofile(conns as u64 + 1024);
    if (nofile as usize) < conns + 64 {
        eprintln!(
            "warning: file limit {nofile} is below the {conns} connections asked for; \
             run as root or raise `ulimit -Hn`"
        );
    }
    let targets =
        cli.common.url.split(',').map(|u| Target::parse(u.trim())).collect::<Result<Vec<_>>>()?;
    let target = targets.first().cloned().ok_or("--url needs at least one URL")?;
    if targets.iter().any(|t| t.proto == Proto::Nats) {
        check_nats(&cli)?;
    }
    let sources = match cli.common.source_addrs {
        // One source address per 20k connections keeps well inside the ~28k ephemeral ports
        // each (source, destination) pair has.
        0 => (conns / 20_000 + 1).min(250) as u8,
        n => n,
    };
    let threads = cli
        .common
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let connector = Arc::new(Connector {
        target,
        targets,
        kind: cli.common.client,
        batch: cli.common.batch,
        sources: Connector::sources(sources),
        handshakes: tokio::sync::Semaphore::new(cli.common.connect_concurrency.max(1)),
        retries: cli.common.connect_retries,
        timeout: Duration::from_secs_f64(cli.common.connect_timeout.max(0.1)),
        retried: AtomicU64::new(0),
    });
    let ctx = Ctx {
        common: cli.common.clone(),
        connector,
        live: Default::default(),
        deadline: Instant::now() + Duration::from_secs_f64(cli.common.max_time.max(1.0)),
    };
    let mut report = rt.block_on(async {
        match &cli.scenario {
            Scenario::Fanout(a) => scenario::fanout::fanout(&ctx, a).await,
            Scenario::Latency(a) => scenario::fanout::latency(&ctx, a).await,
            Scenario::Rooms(a) => scenario::rooms::rooms(&ctx, a).await,
            Scenario::Connections(a) => scenario::connections::connections(&ctx, a).await,
            Scenario::Slowloris(a) => scenario::slowloris::slowloris(&ctx, a).await,
            Scenario::Recover(a) => scenario::recover::recover(&ctx, a).await,
            Scenario::Presence(a) => scenario::presence::presence(&ctx, a).await,
        }
    })?;
    // Connection tasks are done; do not wait for stragglers (e.g. a close handshake).
    rt.shutdown_timeout(Duration::from_secs(1));
    report.finish();
    print!("{}", report.table());
    if let Some(path) = &cli.common.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    if let Some(path) = &cli.common.svg {
        std::fs::write(path, svg::render(&report))?;
    }
    let unrecovered = report.recover.as_ref().is_some_and(|r| r.not_recovered + r.wrong > 0);
    let presence_failed = report.presence.as_ref().is_some_and(|p| p.failed());
    Ok(report.lost > 0 || report.connections.failed > 0 || unrecovered || presence_failed)
}
