//! What every backend's test harness needs to run real server processes (`redis-server`,
//! `nats-server`): free ports, a child process killed on Drop, and bounded polling. Only with
//! the `testing` feature.
//!
//! Every helper panics with a clear message when something is wrong: a test that needs a real
//! server must fail, never pass silently. The helpers block; call them from a multi-threaded
//! tokio runtime so the backends' tasks keep running meanwhile.

use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long any readiness wait may take before a harness panics.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A loopback port that was free a moment ago. Another process may take it before the server
/// binds it, so harnesses retry a start that fails with "address already in use".
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// The first of `candidates` that runs with `--version`; otherwise panics with `install`,
/// a hint on how to install it.
pub fn require_binary(candidates: &[&str], install: &str) -> String {
    for candidate in candidates {
        if let Ok(out) = Command::new(candidate).arg("--version").output() {
            if out.status.success() {
                return candidate.to_string();
            }
        }
    }
    panic!("{} cannot be run: these tests need a real server ({install})", candidates[0])
}

/// Polls `ready` every 20 ms until it is true; panics naming `what` after [`READY_TIMEOUT`].
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + READY_TIMEOUT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out after {READY_TIMEOUT:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server process, killed (SIGKILL) when dropped so that a failing test leaves nothing
/// behind.
#[derive(Default)]
pub struct ServerProcess {
    child: Option<Child>,
}

impl ServerProcess {
    /// Spawns `cmd` with its standard streams closed (servers here log to files).
    pub fn start(&mut self, cmd: &mut Command) {
        self.kill();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let name = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.child = Some(child);
    }

    /// Started and not killed (it may have exited on its own: see [`ServerProcess::exited`]).
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// How it ended, if it was started and has exited on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The process id, while started (for signals such as SIGSTOP).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (no goodbye to clients or peers), then waits for it to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
