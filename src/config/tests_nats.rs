//! Config tests of `kind = "nats"`: its keys, and the routes it cannot carry (no history, no
//! presence), refused at load by key and backend name.

use super::*;

fn located(text: &str) -> Located {
    match Config::parse("test.toml", text) {
        Err(ConfigError::Invalid(l)) => *l,
        other => panic!("expected a located error, got {other:?}"),
    }
}

const NATS: &str =
    "[backends.bus]\nkind = \"nats\"\nservers = [\"nats://a:4222\", \"nats://b:4222\"]\n";

#[test]
fn a_nats_backend_takes_seed_servers_and_credentials() {
    let c = Config::parse("t.toml", NATS).expect("valid");
    match &c.backends[0].kind {
        BackendKind::Nats { servers, auth, tls } => {
            assert_eq!(servers, &["nats://a:4222", "nats://b:4222"]);
            assert_eq!(auth, &Credentials::None);
            assert_eq!(tls, &TlsFiles::default());
        }
        other => panic!("expected nats, got {other:?}"),
    }
    let c = Config::parse("t.toml", &format!("{NATS}user = \"u\"\npassword = \"pw-9f2c\"\n"))
        .expect("valid");
    let BackendKind::Nats { auth, .. } = &c.backends[0].kind else { panic!("nats") };
    assert_eq!(auth, &Credentials::UserPassword { user: "u".into(), password: "pw-9f2c".into() });
    assert!(!format!("{c:?}").contains("pw-9f2c"), "the password stays out of debug output");
    let c = Config::parse("t.toml", &format!("{NATS}token = \"t0k\"\n")).expect("valid");
    let BackendKind::Nats { auth, .. } = &c.backends[0].kind else { panic!("nats") };
    assert_eq!(auth, &Credentials::Token("t0k".into()));
}

#[test]
fn nats_keys_are_checked_with_their_place() {
    let l = located("[backends.bus]\nkind = \"nats\"\n");
    assert_eq!(l.key, "backends.bus.servers");
    let l = located("[backends.bus]\nkind = \"nats\"\nurl = \"nats://a:4222\"\n");
    assert_eq!((l.key.as_str(), l.line), ("backends.bus.url", 3));
    assert!(l.message.contains("servers = [...]"), "{}", l.message);
    let l = located("[backends.bus]\nkind = \"nats\"\nservers = [\"redis://a:6379\"]\n");
    assert_eq!((l.key.as_str(), l.line), ("backends.bus.servers[0]", 3));
    let l = located(&format!("{NATS}user = \"u\"\n"));
    assert_eq!((l.key.as_str(), l.line), ("backends.bus.password", 4));
    let l = located(&format!("{NATS}token = \"t\"\nuser = \"u\"\npassword = \"p\"\n"));
    assert_eq!((l.key.as_str(), l.line), ("backends.bus.token", 4));
    let l = located(&format!("{NATS}publisher_connections = 2\n"));
    assert_eq!(l.key, "backends.bus.publisher_connections");
    let l = located("[backends.r]\nkind = \"redis\"\nurl = \"redis://h\"\ntoken = \"t\"\n");
    assert_eq!((l.key.as_str(), l.line), ("backends.r.token", 4));
    let l = located("[backends.bus]\nkind = \"natz\"\n");
    assert!(l.message.contains("\"nats\""), "{}", l.message);
}

#[test]
fn routes_on_nats_cannot_ask_for_history_or_presence() {
    let l = located(&format!("{NATS}[[routes]]\nmatch = \"chat.*\"\nhistory_size = 10\n"));
    assert_eq!((l.key.as_str(), l.line, l.column), ("routes[0].history_size", 6, 16));
    assert!(l.message.contains("backend bus (nats) keeps no history"), "{}", l.message);
    let l = located(&format!("{NATS}[[routes]]\nmatch = \"chat.*\"\npresence = true\n"));
    assert_eq!((l.key.as_str(), l.line), ("routes[0].presence", 6));
    assert!(l.message.contains("backend bus (nats) keeps no presence"), "{}", l.message);
    let l = located(&format!(
        "{NATS}[[routes]]\nmatch = \"chat.*\"\npresence = true\njoin_leave = true\n"
    ));
    assert_eq!(l.key, "routes[0].presence");
    assert!(l.message.contains("remove presence (and join_leave)"), "{}", l.message);
    let l = located(&format!("{NATS}[[routes]]\nmatch = \"chat.*\"\njoin_leave = true\n"));
    assert_eq!(l.key, "routes[0].join_leave");
    // The same route without those keys is fine.
    Config::parse("t.toml", &format!("{NATS}[[routes]]\nmatch = \"chat.*\"\n")).expect("valid");
}
