//! The JavaScript client (`clients/js`) and the demo chat page (`web/demo.html`), tested with
//! node's own test runner against this build's broker binary: `cargo test --workspace` runs
//! them like every other test. They need `node` (20 or newer) on PATH, and the browser test
//! also Chromium at /usr/bin/chromium and `npm ci --prefix clients/js` (playwright-core); .ci/run
//! installs both. A missing tool fails the test, saying what to install: never a silent pass.
//!
//! The node tests start their own brokers (and redis-server) on free ports in temporary
//! directories, so they run next to the other test binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run on its own (`browser_demo_chat`): it needs Chromium and playwright-core.
const BROWSER: &str = "browser.test.mjs";

/// Longest a node run may take before it is killed and the test fails.
const DEADLINE: Duration = Duration::from_secs(300);

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js")
}

/// `*.test.mjs` under clients/js/test, sorted.
fn test_files() -> Vec<String> {
    let dir = client_dir().join("test");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".test.mjs"))
        .collect();
    files.sort();
    files
}

/// Runs `node --experimental-websocket --test FILES` in clients/js with SWITCHYARD_BIN set,
/// prints everything node wrote, and fails unless it exited 0.
fn run_node_tests(files: &[String]) {
    assert!(!files.is_empty(), "no test files to run");
    let out = tempfile::tempdir().expect("tempdir for node's output");
    let log_path = out.path().join("node.log");
    let log = std::fs::File::create(&log_path).expect("create node.log");
    let paths: Vec<String> = files.iter().map(|f| format!("test/{f}")).collect();
    let spawned = Command::new("node")
        .arg("--experimental-websocket")
        .arg("--test")
        .arg("--test-reporter=spec")
        .args(&paths)
        .current_dir(client_dir())
        .env("SWITCHYARD_BIN", env!("CARGO_BIN_EXE_switchyard"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`node` is not on PATH: install Node.js 20 or newer to run the JavaScript client tests")
        }
        Err(e) => panic!("cannot run node: {e}"),
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "node --test {paths:?} still running after {DEADLINE:?}; killed. Output:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    println!(
        "node --test {} ({:.1} s):\n{output}",
        paths.join(" "),
        started.elapsed().as_secs_f64()
    );
    assert!(status.success(), "node --test {paths:?} failed ({status}):\n{output}");
    // A run that ran nothing must not pass: node prints "# pass N" at the end.
    let passed = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("ℹ pass ").or_else(|| l.trim().strip_prefix("# pass ")))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(passed > 0, "node reported no passing test:\n{output}");
}

#[test]
fn node_client_suite() {
    let files: Vec<String> = test_files().into_iter().filter(|f| f != BROWSER).collect();
    run_node_tests(&files);
}

#[test]
fn browser_demo_chat() {
    assert!(
        client_dir().join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix clients/js` (the browser test drives Chromium with it)"
    );
    run_node_tests(&[BROWSER.to_string()]);
}
