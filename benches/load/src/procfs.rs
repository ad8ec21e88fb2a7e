//! Reading the broker's CPU time and RSS from /proc, and raising our own file limit.

use std::io;

use ::procfs::process::Process;
use rlimit::Resource;

/// A snapshot of a process's resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::other(format!("no such pid {pid}")))?;
    let process = Process::new(pid).map_err(io::Error::other)?;
    let stat = process.stat().map_err(io::Error::other)?;
    let rss_kib = process.status().map_err(io::Error::other)?.vmrss.ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/PID/status")
    })?;
    let ticks = ::procfs::ticks_per_second().max(1);
    Ok(ProcSample {
        cpu_s: (stat.utime + stat.stime) as f64 / ticks as f64,
        rss_bytes: rss_kib * 1024,
    })
}

/// Raises RLIMIT_NOFILE so that `wanted` descriptors fit: to the hard limit at least, and above
/// it when we are allowed to (root can raise the hard limit up to fs.nr_open). Returns the soft
/// limit in force afterwards (0 when it cannot even be read).
pub fn raise_nofile(wanted: u64) -> u64 {
    let Ok((soft, hard)) = Resource::NOFILE.get() else {
        return 0;
    };
    if wanted > hard {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(hard);
        let target = wanted.min(nr_open);
        if target > hard && Resource::NOFILE.set(target, target).is_ok() {
            return target;
        }
    }
    if Resource::NOFILE.set(hard, hard).is_ok() {
        hard
    } else {
        soft
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_self() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_s >= 0.0);
    }

    #[test]
    fn a_process_that_does_not_exist_is_an_error() {
        assert!(sample(u32::MAX).is_err());
    }

    #[test]
    fn the_file_limit_is_at_least_what_it_was() {
        let (soft, _) = Resource::NOFILE.get().expect("getrlimit");
        assert!(raise_nofile(soft) >= soft);
    }
}
