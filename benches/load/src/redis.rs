//! What the Redis servers behind the brokers spent (`--redis`): `INFO stats` and `INFO cpu`
//! read with redis-rs before and after the measured window, so a report can say how many
//! reads, writes and CPU microseconds Redis spent per publish.

use std::time::Duration;

use crate::procfs::ProcSample;
use crate::Result;

/// How long one server may take to answer both.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The counters read from one or more servers (summed).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InfoSample {
    /// `total_reads_processed`: read events (socket reads) the server handled.
    pub reads: u64,
    /// `total_writes_processed`: write events (socket writes) the server handled.
    pub writes: u64,
    /// `used_cpu_sys + used_cpu_user`, seconds.
    pub cpu_s: f64,
}

impl InfoSample {
    fn add(&mut self, o: InfoSample) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.cpu_s += o.cpu_s;
    }
}

/// Reads the fields of [`InfoSample`] out of INFO text (`key:value` lines, `#` section heads);
/// all four must be there.
pub fn parse_info(text: &str) -> Result<InfoSample> {
    let (mut reads, mut writes, mut sys, mut user) = (None, None, None, None);
    for line in text.lines() {
        let Some((k, v)) = line.trim_end().split_once(':') else { continue };
        match k {
            "total_reads_processed" => reads = v.parse::<u64>().ok(),
            "total_writes_processed" => writes = v.parse::<u64>().ok(),
            "used_cpu_sys" => sys = v.parse::<f64>().ok(),
            "used_cpu_user" => user = v.parse::<f64>().ok(),
            _ => {}
        }
    }
    match (reads, writes, sys, user) {
        (Some(reads), Some(writes), Some(sys), Some(user)) => {
            Ok(InfoSample { reads, writes, cpu_s: sys + user })
        }
        _ => Err("INFO lacks total_reads_processed, total_writes_processed, used_cpu_sys or \
                  used_cpu_user"
            .into()),
    }
}

/// `INFO stats` and `INFO cpu` of one server at `addr` (`host:port`, loopback only).
pub async fn info(addr: &str) -> Result<InfoSample> {
    let sock = tokio::net::lookup_host(addr)
        .await?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| format!("{addr} does not resolve to an IPv4 address"))?;
    if !sock.ip().is_loopback() {
        return Err(format!("refusing non-loopback redis {sock}").into());
    }
    let read = async {
        let client = redis::Client::open(format!("redis://{sock}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let stats: String = redis::cmd("INFO").arg("stats").query_async(&mut conn).await?;
        let cpu: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
        parse_info(&format!("{stats}\n{cpu}"))
    };
    tokio::time::timeout(TIMEOUT, read).await.map_err(|_| format!("{addr}: INFO timed out"))?
}

/// The sum over `addrs`; None (with a warning) when there are none or one cannot be read.
pub async fn sample(addrs: &[String]) -> Option<InfoSample> {
    if addrs.is_empty() {
        return None;
    }
    let mut total = InfoSample::default();
    for a in addrs {
        match info(a).await {
            Ok(s) => total.add(s),
            Err(e) => {
                eprintln!("warning: redis {a}: {e}");
                return None;
            }
        }
    }
    Some(total)
}

/// Redis's side of a run: what the servers did over the measured window, per publish.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RedisEconomy {
    pub addrs: Vec<String>,
    /// Publishes over the window (the denominator of the `_per_publish` figures).
    pub publishes: u64,
    /// Deltas of `total_reads_processed` and `total_writes_processed`, summed over the servers.
    pub reads: u64,
    pub writes: u64,
    /// Delta of `used_cpu_sys + used_cpu_user`, seconds, summed over the servers.
    pub cpu_s: f64,
    pub reads_per_publish: Option<f64>,
    pub writes_per_publish: Option<f64>,
    pub cpu_us_per_publish: Option<f64>,
    /// CPU of the `--backend-pid` processes over the same window, from /proc (when given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_cpu_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_cpu_us_per_publish: Option<f64>,
}

/// Samples at the start of the measured window.
pub struct Window {
    info: Option<InfoSample>,
    process: Option<ProcSample>,
}

impl Window {
    pub async fn start(ctx: &crate::scenario::Ctx) -> Self {
        Self { info: sample(&ctx.common.redis).await, process: ctx.sample_backend() }
    }

    /// Samples again; `publishes` is filled in later by [`Ended::economy`].
    pub async fn end(self, ctx: &crate::scenario::Ctx) -> Ended {
        let info = match (self.info, sample(&ctx.common.redis).await) {
            (Some(b), Some(a)) => Some((b, a)),
            _ => None,
        };
        let process = match (self.process, ctx.sample_backend()) {
            (Some(b), Some(a)) => Some((a.cpu_s - b.cpu_s).max(0.0)),
            _ => None,
        };
        Ended { addrs: ctx.common.redis.clone(), info, process }
    }
}

/// Both samples of a window.
pub struct Ended {
    addrs: Vec<String>,
    info: Option<(InfoSample, InfoSample)>,
    process: Option<f64>,
}

impl Ended {
    /// The report section, when `--redis` was given and both samples were read.
    pub fn economy(self, publishes: u64) -> Option<RedisEconomy> {
        let (b, a) = self.info?;
        Some(economy(self.addrs, b, a, self.process, publishes))
    }
}

pub fn economy(
    addrs: Vec<String>,
    before: InfoSample,
    after: InfoSample,
    process_cpu_s: Option<f64>,
    publishes: u64,
) -> RedisEconomy {
    let reads = after.reads.saturating_sub(before.reads);
    let writes = after.writes.saturating_sub(before.writes);
    let cpu_s = (after.cpu_s - before.cpu_s).max(0.0);
    let per = |v: f64| (publishes > 0).then(|| v / publishes as f64);
    RedisEconomy {
        addrs,
        publishes,
        reads,
        writes,
        cpu_s,
        reads_per_publish: per(reads as f64),
        writes_per_publish: per(writes as f64),
        cpu_us_per_publish: per(cpu_s * 1e6),
        process_cpu_s,
        process_cpu_us_per_publish: process_cpu_s.and_then(|c| per(c * 1e6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str =
        "# Stats\r\ntotal_connections_received:12\r\ntotal_commands_processed:99\r\n\
                         total_reads_processed:1500\r\ntotal_writes_processed:700\r\n";
    const CPU: &str = "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:2.500000\r\n\
                       used_cpu_sys_children:0.000000\r\n";

    #[test]
    fn info_fields_from_two_sections() {
        let s = parse_info(&format!("{STATS}\n{CPU}")).expect("info");
        assert_eq!(s, InfoSample { reads: 1500, writes: 700, cpu_s: 3.75 });
        assert!(parse_info(STATS).is_err(), "cpu section missing");
    }

    #[test]
    fn per_publish_figures() {
        let b = InfoSample { reads: 100, writes: 50, cpu_s: 1.0 };
        let a = InfoSample { reads: 1100, writes: 2050, cpu_s: 1.5 };
        let e = economy(vec!["127.0.0.1:6379".into()], b, a, Some(0.25), 1000);
        assert_eq!((e.reads, e.writes), (1000, 2000));
        assert_eq!(e.reads_per_publish, Some(1.0));
        assert_eq!(e.writes_per_publish, Some(2.0));
        assert!((e.cpu_us_per_publish.expect("cpu") - 500.0).abs() < 1e-6);
        assert!((e.process_cpu_us_per_publish.expect("proc") - 250.0).abs() < 1e-6);
        assert_eq!(economy(vec![], b, a, None, 0).reads_per_publish, None);
    }
}
