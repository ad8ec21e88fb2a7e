//! Runs every scenario of the load generator against the in-test stub server (no broker
//! needed), with both client implementations, and checks the JSON report.

mod stub;

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!("switchyard-load-stub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join(format!("{}.json", args.join("_").replace(['/', ':', '.'], "-")));
    let svg = json.with_extension("svg");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-load"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .args(["--drain-timeout", "2", "--max-time", "60"])
        .output()
        .expect("run switchyard-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let svg = std::fs::read_to_string(&svg).expect("svg written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("valid json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_against_stub() {
    let stub = stub::start().await;
    let url = format!("ws://{}/ws", stub.addr);
    let pid = std::process::id().to_string();
    let blocking = tokio::task::spawn_blocking(move || {
        for client in ["raw", "tungstenite"] {
            let r = run(&[
                "fanout",
                "--url",
                &url,
                "--client",
                client,
                "--subscribers",
                "20",
                "--messages",
                "200",
                "--publishers",
                "2",
                "--window",
                "32",
                "--pid",
                &pid,
            ]);
            assert_eq!(r["delivered"], 4000, "{r}");
            assert_eq!(r["lost"], 0);
            assert_eq!(r["out_of_order"], 0);
            assert!(r["broker"]["cpu_s_per_million_deliveries"].is_number());
        }
        let r = run(&[
            "fanout",
            "--url",
            &url,
            "--subscribers",
            "5",
            "--messages",
            "50",
            "--rate",
            "500",
            "--subscribe-via",
            "query",
        ]);
        assert_eq!(r["delivered"], 250, "{r}");
        let r = run(&[
            "latency",
            "--url",
            &url,
            "--subscribers",
            "10",
            "--deliveries-per-s",
            "2000",
            "--duration",
            "1",
        ]);
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["delivered"], 2000, "{r}");
        assert!(r["latency"]["p99_us"].as_u64().expect("p99") > 0);
        let r = run(&[
            "rooms",
            "--url",
            &url,
            "--connections",
            "30",
            "--room-size",
            "4",
            "--rate",
            "300",
            "--duration",
            "1",
            "--dm-every",
            "3",
        ]);
        assert_eq!(r["lost"], 0, "{r}");
        assert!(r["delivered"].as_u64().expect("delivered") > 300, "{r}");
        let r = run(&[
            "connections",
            "--url",
            &url,
            "--connections",
            "200",
            "--hold",
            "0.5",
            "--source-addrs",
            "3",
            "--pid",
            &pid,
        ]);
        assert_eq!(r["held"], 200, "{r}");
        assert!(r["broker"]["rss_per_connection_bytes"].is_number());
    });
    blocking.await.expect("scenarios");
    drop(stub);
}

/// Not a check, a measurement: the load generator's own CPU per million deliveries with each
/// client implementation, against the stub. Run with
/// `cargo test --release -p switchyard-load --test stub_e2e -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
#[ignore]
async fn client_cost() {
    let stub = stub::start().await;
    let url = format!("ws://{}/ws", stub.addr);
    tokio::task::spawn_blocking(move || {
        for round in 0..3 {
            for client in ["raw", "tungstenite"] {
                let r = run(&[
                    "fanout", "--url", &url, "--client", client, "--subscribers", "200",
                    "--messages", "5000", "--window", "256", "--threads", "1",
                ]);
                println!(
                    "round {round} {client:>11}: {} delivered, {:.0}/s, load generator {:.3} CPU-s per million",
                    r["delivered"], r["deliveries_per_s"].as_f64().unwrap_or(0.0),
                    r["loadgen_cpu_s_per_million_deliveries"].as_f64().unwrap_or(0.0)
                );
            }
        }
    })
    .await
    .expect("measure");
}
