//! Reading the broker's CPU time and RSS from /proc, and raising our own file limit.

use std::io;

/// A snapshot of a process's resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let ticks = clock_ticks();
    let (utime, stime) = parse_stat_cpu(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/PID/stat"))?;
    let rss_kib = parse_status_rss_kib(&status).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/PID/status")
    })?;
    Ok(ProcSample { cpu_s: (utime + stime) as f64 / ticks as f64, rss_bytes: rss_kib * 1024 })
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime and stime (fields 14 and 15, in clock ticks) from /proc/PID/stat. The command name
/// (field 2) is in parentheses and may itself contain spaces and parentheses, so fields are
/// counted from the *last* `)`.
pub fn parse_stat_cpu(stat: &str) -> Option<(u64, u64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // `after` starts at field 3 (state); utime is field 14, so skip 11 fields.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// VmRSS in KiB from /proc/PID/status.
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut it = line["VmRSS:".len()..].split_ascii_whitespace();
    let n = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => Some(n),
        _ => None,
    }
}

/// Raises RLIMIT_NOFILE so that `wanted` descriptors fit: to the hard limit at least, and above
/// it when we are allowed to (root can raise the hard limit up to fs.nr_open). Returns the soft
/// limit in force afterwards.
pub fn raise_nofile(wanted: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let hard = lim.rlim_max;
    if wanted > hard {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(hard);
        let target = wanted.min(nr_open);
        let up = libc::rlimit { rlim_cur: target, rlim_max: target };
        // SAFETY: setrlimit reads the struct we own.
        if target > hard && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &up) } == 0 {
            return target;
        }
    }
    let to_hard = libc::rlimit { rlim_cur: hard, rlim_max: hard };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &to_hard) } == 0 {
        hard
    } else {
        lim.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_comm() {
        let stat = "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                    250 75 0 0 20 0 4 0 100 1000000 300 18446744073709551615";
        assert_eq!(parse_stat_cpu(stat), Some((250, 75)));
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(parse_stat_cpu("1 (x) S 1 2 3"), None);
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn status_rss() {
        let status = "Name:\tswitchyard\nVmPeak:\t  10000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss_kib(status), Some(12345));
        assert_eq!(parse_status_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn sample_self() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_s >= 0.0);
    }
}
