//! The command line as a user runs it: print-config, check (with located errors for every
//! file in config/invalid/) and route explanations.

mod common;

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(ROOT).output().expect("run switchyard")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn print_config_prints_the_builtin_default_and_it_checks() {
    let o = run(&["print-config"]);
    assert!(o.status.success());
    let printed = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(printed, switchyard::config::DEFAULT_CONFIG);
    assert!(printed.contains("DEVELOPMENT DEFAULT"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("default.toml");
    std::fs::write(&path, printed).expect("write");
    let o = run(&["check", "--config", path.to_str().expect("utf8 path")]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn shipped_configs_check_clean() {
    for f in [
        "config/default.toml",
        "config/chat.toml",
        "config/redis.toml",
        "config/redis-cluster.toml",
        "config/nats.toml",
    ] {
        let o = run(&["check", "--config", f]);
        assert!(o.status.success(), "{f}: {}", text(&o));
        assert!(text(&o).contains("ok:"), "{f}: {}", text(&o));
        assert!(!text(&o).contains("warning"), "{f}: {}", text(&o));
    }
}

#[test]
fn every_invalid_config_is_reported_with_file_line_column_and_key() {
    let dir = std::path::Path::new(ROOT).join("config/invalid");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config/invalid") {
        let path = entry.expect("entry").path();
        let rel =
            format!("config/invalid/{}", path.file_name().and_then(|n| n.to_str()).expect("name"));
        let content = std::fs::read_to_string(&path).expect("read");
        let expect = content
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{rel} has no `# expect: line:col: key` header"));
        let o = run(&["check", "--config", &rel]);
        assert_eq!(o.status.code(), Some(2), "{rel} must fail: {}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        let want = format!("error: {rel}:{expect}:");
        assert!(stderr.starts_with(&want), "{rel}: wanted {want:?}, got:\n{stderr}");
        // The offending line is shown under the message.
        assert!(stderr.lines().count() >= 3, "{rel}: no excerpt:\n{stderr}");
        // And, where the file says so, the message says what is wrong in the user's words.
        for message in content.lines().filter_map(|l| l.strip_prefix("# message: ")) {
            let first = stderr.lines().next().unwrap_or("");
            assert!(first.contains(message), "{rel}: wanted {message:?} in:\n{stderr}");
        }
        checked += 1;
    }
    assert!(checked >= 14, "only {checked} invalid configs found");
}

#[test]
fn missing_file_is_a_clear_error() {
    let o = run(&["check", "--config", "config/does-not-exist.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("config/does-not-exist.toml: cannot read"), "{}", text(&o));
}

#[test]
fn check_warns_about_shadowed_rules() {
    let o = run(&["check", "--config", "tests/fixtures/shadowed.toml"]);
    assert!(o.status.success());
    let out = text(&o);
    assert!(
        out.contains(
            "routes[1] (match = \"room.lobby\") can never match: routes[0] (match = \"room.*\")"
        ),
        "{out}"
    );
    assert!(!out.contains("routes[2]"), "{out}");
}

#[test]
fn route_explains_the_matching_rule_for_a_user() {
    let o = run(&["route", "--config", "config/chat.toml", "--user", "alice", "user.alice"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    for want in [
        "rule:              routes[0] match = \"user.{id}\"",
        "captures:          id = \"alice\"",
        "backend:           local (memory)",
        "backend channel:   im:user:alice",
        "subscribe:         user == {id} -> allowed for user \"alice\"",
        "publish:           authenticated -> allowed for user \"alice\"",
        "max_message_bytes: 4096",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let o = run(&["route", "--config", "config/chat.toml", "--user", "alice", "room.lobby"]);
    let out = text(&o);
    let want =
        "presence:          members listed, a dead node's gone within 30 s; join/leave diffs on";
    assert!(out.contains(want), "missing {want:?} in:\n{out}");
    let o = run(&["route", "--config", "config/chat.toml", "--user", "bob", "user.alice"]);
    assert!(
        text(&o).contains("subscribe:         user == {id} -> denied for user \"bob\""),
        "{}",
        text(&o)
    );
    let o = run(&["route", "--config", "config/chat.toml", "user.alice"]);
    assert!(
        text(&o).contains("publish:           authenticated -> denied for anonymous"),
        "{}",
        text(&o)
    );
}

#[test]
fn route_reports_no_route_and_invalid_channels() {
    let o = run(&["route", "--config", "config/chat.toml", "nothing.here"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no_route"), "{}", text(&o));
    let o = run(&["route", "--config", "config/chat.toml", "bad..name"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("invalid_channel"), "{}", text(&o));
    let o = run(&["route", "anything.at.all"]);
    assert!(o.status.success(), "the built-in default routes everything: {}", text(&o));
}

#[test]
fn check_names_both_colliding_routes_and_an_example() {
    let o = run(&["check", "--config", "config/invalid/route-collision.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let out = text(&o);
    for want in [
        "routes[1] (match = \"**\", no channel template)",
        "routes[0] (match = \"user.{id}\", channel = \"im:user:{id}\")",
        "\"im:user:a\" would carry both \"user.a\" (routes[0]) and \"im:user:a\" (routes[1])",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn route_explains_a_channel_refused_for_its_captures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pairs.toml");
    std::fs::write(
        &path,
        "[backends.local]\nkind = \"memory\"\n[[routes]]\nmatch = \"pair.{a}.{b}\"\nchannel = \"{a}:{b}\"\nsubscribe = \"anyone\"\npublish = \"anyone\"\n",
    )
    .expect("write config");
    let config = path.to_str().expect("utf8 path");
    let o = run(&["route", "--config", config, "pair.x:y.z"]);
    let out = text(&o);
    for want in [
        "backend channel:   x:y:z",
        "refused:           {a} = \"x:y\" holds ':', which follows {a}",
        "subscribe:         anyone -> denied for anonymous",
        "publish:           anyone -> denied for anonymous",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let out = text(&run(&["route", "--config", config, "pair.x.y:z"]));
    assert!(out.contains("subscribe:         anyone -> allowed for anonymous"), "{out}");
    assert!(!out.contains("refused"), "{out}");
}

/// The binary as an operator runs it: SIGHUP reloads the rules, SIGTERM closes clients with
/// 1001 and exits 0.
#[tokio::test]
async fn serve_reloads_on_sighup_and_shuts_down_on_sigterm() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let broker = common::ServedBroker::start(common::OPEN_CONFIG).await;
    let ok_reloads = |page: String| {
        page.lines()
            .find_map(|l| l.strip_prefix("switchyard_config_reloads_total{result=\"ok\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(ok_reloads(broker.metrics().await), 0);
    broker.signal("HUP");
    let addr = broker.addr;
    common::eventually("SIGHUP reloads the config", || async move {
        ok_reloads(common::http(addr, "GET", "/metrics", &[], "").await.1) == 1
    })
    .await;

    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.expect("connect");
    let welcome = ws.next().await.expect("welcome").expect("welcome frame");
    assert!(matches!(welcome, Message::Text(_)));
    broker.signal("TERM");
    let close = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close, Some(1001));
    drop(ws);
    let status = broker.exit_status().await;
    assert!(status.success(), "serve exited with {status}");
}

/// Writes `toml` to a file of its own and runs `check FILE` on it (the positional form).
fn check_text(toml: &str) -> (Output, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("checked.toml");
    std::fs::write(&path, toml).expect("write config");
    let o = run(&["check", path.to_str().expect("utf8 path")]);
    let out = text(&o);
    (o, out)
}

#[test]
fn check_takes_the_file_as_an_argument_or_with_config() {
    for args in [&["check", "config/chat.toml"][..], &["check", "--config", "config/chat.toml"]] {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("ok: config/chat.toml: 4 routes"), "{args:?}: {}", text(&o));
    }
    let o = run(&["check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("FILE"), "{}", text(&o));
    let o = run(&["check", "config/chat.toml", "--config", "config/redis.toml"]);
    assert_eq!(o.status.code(), Some(2), "one file at a time: {}", text(&o));
}

#[test]
fn check_warns_when_routes_need_users_but_no_jwt_key_is_configured() {
    let routes = "[backends.local]\nkind = \"memory\"\n\
        [[routes]]\nmatch = \"user.{id}\"\nsubscribe = \"user == {id}\"\npublish = \"authenticated\"\n\
        [[routes]]\nmatch = \"room.*\"\n\
        [[routes]]\nmatch = \"open.*\"\nsubscribe = \"anyone\"\npublish = \"nobody\"\n";
    let (o, out) = check_text(routes);
    assert!(o.status.success(), "a warning is not an error: {out}");
    for want in [
        "routes[0] (match = \"user.{id}\"): subscribe = \"user == {id}\" and publish = \"authenticated\" need a signed-in user, but [auth] configures no JWT key",
        // Both default to `authenticated`.
        "routes[1] (match = \"room.*\"): subscribe = \"authenticated\" and publish = \"authenticated\" need a signed-in user",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("routes[2]"), "anyone/nobody need no token: {out}");

    let with_jwt = format!("[auth]\njwt_hs256_secret_env = \"SWITCHYARD_JWT_SECRET\"\n{routes}");
    let (o, out) = check_text(&with_jwt);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("warning"), "{out}");
}

#[test]
fn check_warns_about_a_file_without_routes() {
    let (o, out) = check_text("[backends.local]\nkind = \"memory\"\n");
    assert!(o.status.success(), "{out}");
    assert!(out.contains("warning:") && out.contains("no [[routes]]: every channel gets no_route"));
    assert!(out.contains("ok:") && out.contains("0 routes, 1 backends"), "{out}");
}
