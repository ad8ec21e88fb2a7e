//! Command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::ClientKind;

#[derive(Debug, Parser)]
#[command(name = "switchyard-load", version, about = "End-to-end load generator for switchyard")]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Options shared by every scenario (accepted before or after the scenario name).
#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct Common {
    /// WebSocket URL of the broker; must be a loopback address. Several, comma-separated,
    /// spread connections round-robin over broker nodes (e.g. two nodes on one Redis):
    /// connection i goes to URL i % n. `nats+ws://host:port` speaks the NATS protocol to
    /// nats-server's websocket listener instead (fanout, latency, rooms, connections).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Broker process id: report its CPU seconds per million deliveries and its RSS. Several,
    /// comma-separated (one per broker node), are summed.
    #[arg(long, global = true, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Backend processes (e.g. the Redis servers), comma-separated: with `presence`, their CPU
    /// over the same window as the broker's is reported apart.
    #[arg(long, global = true, value_delimiter = ',')]
    pub backend_pid: Vec<u32>,
    /// Redis servers (`host:port`, comma-separated, e.g. every master of a cluster): read
    /// `INFO stats` and `INFO cpu` before and after the measured window and report their
    /// reads, writes and CPU per publish (fanout, latency, rooms). With --backend-pid, those
    /// processes' CPU over the same window is reported next to it.
    #[arg(long, global = true, value_delimiter = ',')]
    pub redis: Vec<String>,
    /// Write the full report as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Draw the latency histogram and throughput over time to this SVG file.
    #[arg(long, global = true)]
    pub svg: Option<PathBuf>,
    /// Connect with `?batch=1`: accept several `\n`-separated objects per server frame.
    #[arg(long, global = true)]
    pub batch: bool,
    /// WebSocket client implementation.
    #[arg(long, global = true, value_enum, default_value_t = ClientKind::Raw)]
    pub client: ClientKind,
    /// Tokio worker threads (default: one per core).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Spread connections over source addresses 127.0.0.1..=127.0.0.N (0: one per 20,000
    /// connections).
    #[arg(long, global = true, default_value_t = 0)]
    pub source_addrs: u8,
    /// Handshakes in progress at once. Higher values overflow a default listen backlog (128)
    /// and stall on 1 s SYN retransmits: 256 connected ~1k/s here, 64 ~16k/s.
    #[arg(long, global = true, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Retries per connection (with exponential backoff from 50 ms up to 2 s).
    #[arg(long, global = true, default_value_t = 5)]
    pub connect_retries: u32,
    /// Seconds one connection attempt (TCP + upgrade + welcome) may take.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// After publishing ends, seconds without a new delivery before the missing ones are
    /// declared lost.
    #[arg(long, global = true, default_value_t = 5.0)]
    pub drain_timeout: f64,
    /// Hard limit on the whole run, seconds; the tool always stops by itself.
    #[arg(long, global = true, default_value_t = 900.0)]
    pub max_time: f64,
    /// How to subscribe: a `subscribe` frame answered by `ok` (default), or `?channel=` on the
    /// URL.
    #[arg(long, global = true, value_enum, default_value_t = SubscribeVia::Frame)]
    pub subscribe_via: SubscribeVia,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum SubscribeVia {
    Frame,
    Query,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// N subscribers on one channel, M messages from P publishers, burst or fixed rate.
    Fanout(FanoutArgs),
    /// Fixed delivery rate fan-out, reporting latency percentiles.
    Latency(LatencyArgs),
    /// Chat shape: every connection on a personal and a group channel, publishing at a rate.
    Rooms(RoomsArgs),
    /// N idle connections held; broker RSS per connection with --pid.
    Connections(ConnectionsArgs),
    /// N sockets trickling a request head they never finish; legitimate connect times.
    Slowloris(SlowlorisArgs),
    /// M messages published to a history channel, then N clients recovering them at once.
    Recover(RecoverArgs),
    /// Presence: counts latency on a big channel, subscribe throughput with and without
    /// presence, and what a join storm costs the subscribers of a `join_leave` channel.
    Presence(PresenceArgs),
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct PublishArgs {
    /// Publisher connections; messages are split evenly between them.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Publishes in flight (sent, not yet acknowledged) per publisher connection.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Extra bytes of padding in each message's data.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Channel to use.
    #[arg(long, default_value = "bench.fanout")]
    pub channel: String,
    /// Publish through `POST /api/publish` instead of WebSocket frames.
    #[arg(long)]
    pub via_http: bool,
    /// API key sent as `Authorization: Bearer KEY` with --via-http.
    #[arg(long)]
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct FanoutArgs {
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Messages published in total.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Messages per second over all publishers; 0 publishes as fast as the window allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    #[command(flatten)]
    pub publish: PublishArgs,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct LatencyArgs {
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Target deliveries per second (message rate = this / subscribers).
    #[arg(long, default_value_t = 50_000.0)]
    pub deliveries_per_s: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[command(flatten)]
    pub publish: PublishArgs,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct RoomsArgs {
    /// Connections (users); user i subscribes to `user.<i>` and `room.<i / room-size>`.
    #[arg(long, default_value_t = 2000)]
    pub connections: usize,
    /// Members per room.
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Messages per second over all connections.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Every K-th message of a user is a direct message to `user.<i+1>` instead of a room
    /// message (0: rooms only).
    #[arg(long, default_value_t = 5)]
    pub dm_every: u64,
    /// Publishes in flight per connection.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Extra bytes of padding in each message's data.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct ConnectionsArgs {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Seconds to hold them once all are open.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// Also subscribe each connection to its own channel `idle.<i>`.
    #[arg(long)]
    pub subscribe: bool,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct SlowlorisArgs {
    /// Slow sockets to hold, each sending a request head it never finishes.
    #[arg(long, default_value_t = 10_000)]
    pub sockets: usize,
    /// Seconds between the bytes each slow socket sends.
    #[arg(long, default_value_t = 1.0)]
    pub trickle: f64,
    /// Legitimate clients connected one after another while the slow sockets are held.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Pause between two legitimate clients, milliseconds.
    #[arg(long, default_value_t = 10)]
    pub client_interval_ms: u64,
    /// Do not replace a slow socket the broker closes.
    #[arg(long)]
    pub no_reconnect: bool,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct RecoverArgs {
    /// Clients recovering the channel at once.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Messages each client missed (published before they subscribe); at most the route's
    /// `recovery_max` and `history_size`.
    #[arg(long, default_value_t = 1000)]
    pub missed: u64,
    /// Channel to use; its route needs `history_size`.
    #[arg(long, default_value = "bench.recover")]
    pub channel: String,
    /// Publishes in flight (sent, not yet acknowledged) while publishing the missed messages.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct PresenceArgs {
    #[command(subcommand)]
    pub mode: PresenceMode,
}

#[derive(Debug, Clone, Subcommand, serde::Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum PresenceMode {
    /// N members on one presence channel, then counts queries (and member pages) timed.
    Counts(PresenceCountsArgs),
    /// C connections each subscribing to S channels of their own; subscribes per second.
    Subscribe(PresenceSubscribeArgs),
    /// W watchers on a `join_leave` channel while J connections join it; diffs per watcher.
    JoinStorm(PresenceStormArgs),
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct PresenceCountsArgs {
    /// Member connections subscribed to the channel (spread over the URLs).
    #[arg(long, default_value_t = 10_000)]
    pub members: usize,
    /// The channel; its route needs `presence = true`.
    #[arg(long, default_value = "pres.counts")]
    pub channel: String,
    /// Counts queries (`"members":false`) timed, after the warm-up.
    #[arg(long, default_value_t = 10_000)]
    pub queries: u64,
    /// Counts queries in flight at once on the reader's connection.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Counts queries sent first and not timed (script loading, connection set-up).
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Pings timed the same way before the counts queries: the broker's round trip without a
    /// backend, as a baseline (0: none).
    #[arg(long, default_value_t = 10_000)]
    pub pings: u64,
    /// Member pages timed per page size, one after another, walking the channel by cursor.
    #[arg(long, default_value_t = 200)]
    pub page_queries: u64,
    /// Page sizes (`limit`) to time, comma-separated (`--page-queries 0` times none).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub pages: Vec<usize>,
    /// Seconds to wait for the counts to say `--members` (a previous run's members may still
    /// be leaving, or their leases ending).
    #[arg(long, default_value_t = 60.0)]
    pub settle_timeout: f64,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct PresenceSubscribeArgs {
    /// Connections subscribing at once (spread over the URLs).
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Channels each connection subscribes to: `<prefix>.<connection>.<k>`. At most the
    /// broker's `limits.max_subscriptions`; above `limits.subscribe_burst` needs a faster
    /// `limits.subscribe_rate`.
    #[arg(long, default_value_t = 200)]
    pub channels: usize,
    /// Channel prefix; the route it matches decides whether presence is on.
    #[arg(long, default_value = "pres")]
    pub prefix: String,
    /// Subscribes in flight (sent, not yet answered) per connection; 0: all at once.
    #[arg(long, default_value_t = 0)]
    pub window: usize,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct PresenceStormArgs {
    /// Connections subscribed to the channel before the storm, each counting the diffs.
    #[arg(long, default_value_t = 10)]
    pub watchers: usize,
    /// Connections joining (connect and subscribe) as fast as --connect-concurrency allows.
    #[arg(long, default_value_t = 5000)]
    pub joins: usize,
    /// The channel; its route needs `presence = true` and `join_leave = true`.
    #[arg(long, default_value = "pres.storm")]
    pub channel: String,
    /// Before the storm: milliseconds without a diff (the watchers' own joins) to wait for.
    #[arg(long, default_value_t = 1000)]
    pub quiet_ms: u64,
}

impl Scenario {
    /// Connections this scenario opens, to size file limits and source addresses.
    pub fn connections(&self) -> usize {
        match self {
            Scenario::Fanout(a) => a.subscribers + a.publish.publishers,
            Scenario::Latency(a) => a.subscribers + a.publish.publishers,
            Scenario::Rooms(a) => a.connections,
            Scenario::Connections(a) => a.connections,
            Scenario::Slowloris(a) => a.sockets + a.clients,
            Scenario::Recover(a) => a.clients + 1,
            Scenario::Presence(a) => match &a.mode {
                PresenceMode::Counts(c) => c.members + 1,
                PresenceMode::Subscribe(s) => s.connections,
                PresenceMode::JoinStorm(s) => s.watchers + s.joins,
            },
        }
    }
}
