//! Identity and permissions: JWT at the upgrade and mid-connection, every permission kind,
//! and `user` fields clients cannot forge.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Secrets, TestBroker};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const SECRET: &str = "integration-test-secret";

const ROUTES: &str = r#"
[[routes]]
match = "user.{id}"
subscribe = "user == {id}"
publish = "authenticated"

[[routes]]
match = "room.{room}"
subscribe = "authenticated"
publish = "authenticated"

[[routes]]
match = "news.*"
subscribe = "anyone"
publish = "nobody"

[[routes]]
match = "open.**"
subscribe = "anyone"
publish = "anyone"
"#;

/// A broker verifying HS256 tokens signed with [`SECRET`] (read from a secret file), with
/// `auth` as more `[auth]` keys.
async fn hs256_broker(auth: &str) -> TestBroker {
    let secrets = Secrets::new();
    let toml = format!(
        "[auth]\n{}{auth}\n[backends.local]\nkind = \"memory\"\n{ROUTES}",
        secrets.jwt(SECRET)
    );
    TestBroker::start_with_secrets(&toml, secrets).await
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn token(sub: &str, exp: Option<u64>) -> String {
    let mut claims = json!({ "sub": sub });
    if let Some(exp) = exp {
        claims["exp"] = json!(exp);
    }
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
        .expect("encode token")
}

/// The HTTP status of a refused upgrade.
async fn refused_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("upgrade to {url} was accepted"),
    }
}

#[tokio::test]
async fn valid_token_in_query_or_header_identifies_the_user() {
    let broker = hs256_broker("").await;
    let mut alice = broker.connect(&format!("token={}", token("alice", Some(now() + 600)))).await;
    alice.subscribe("user.alice").await;

    let mut request = broker.url("/ws").into_client_request().expect("request");
    let bearer = HeaderValue::from_str(&format!("Bearer {}", token("bob", None))).expect("header");
    request.headers_mut().insert("authorization", bearer);
    let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("header token accepted");
    drop(ws);

    let mut bob = broker.connect(&format!("token={}", token("bob", None))).await;
    bob.publish("user.alice", json!("hello alice")).await;
    let m = alice.recv().await;
    assert_eq!(m, json!({"op":"message","channel":"user.alice","data":"hello alice","user":"bob"}));
    broker.shutdown().await;
}

#[tokio::test]
async fn forged_expired_and_garbage_tokens_get_401_before_the_upgrade() {
    let broker = hs256_broker("").await;
    let forged = encode(
        &Header::default(),
        &json!({"sub":"alice"}),
        &EncodingKey::from_secret(b"not the secret"),
    )
    .expect("encode");
    assert_eq!(refused_status(&broker.url(&format!("/ws?token={forged}"))).await, 401);
    let expired = token("alice", Some(now() - 5));
    assert_eq!(refused_status(&broker.url(&format!("/ws?token={expired}"))).await, 401);
    assert_eq!(refused_status(&broker.url("/ws?token=garbage")).await, 401);
    let no_sub = encode(
        &Header::default(),
        &json!({"name":"x"}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode");
    assert_eq!(refused_status(&broker.url(&format!("/ws?token={no_sub}"))).await, 401);
    // The 401 body says why, as JSON.
    let body = refusal_body(broker.addr, &expired).await;
    assert_eq!(body["code"], "unauthorized");
    assert!(body["message"].as_str().unwrap_or("").contains("expired"), "{body}");
    broker.shutdown().await;
}

/// Asks for an upgrade with `token`, asserts it is refused with 401, and returns the JSON body.
async fn refusal_body(addr: SocketAddr, token: &str) -> Value {
    let (status, body) = common::http(
        addr,
        "GET",
        &format!("/ws?token={token}"),
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    serde_json::from_str(&body).expect("JSON body")
}

/// A refused client is told what is wrong with its token, and the operator's log says the same.
#[tokio::test]
async fn a_refused_token_is_told_what_is_wrong_and_the_log_says_it_too() {
    let secrets = Secrets::new();
    let toml = format!(
        "[auth]\n{}jwt_issuer = \"https://id.example.com\"\n[backends.local]\nkind = \"memory\"\n{ROUTES}",
        secrets.jwt(SECRET)
    );
    let broker = common::ServedBroker::start(&toml).await;
    let signed = |claims: Value| {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
            .expect("encode")
    };
    let iss = "https://id.example.com";
    let forged = encode(
        &Header::default(),
        &json!({"sub":"alice","iss":iss}),
        &EncodingKey::from_secret(b"not the secret"),
    )
    .expect("encode");
    let rsa =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rs256-private.pem"))
            .expect("RSA key fixture");
    let rs256 = encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub":"alice","iss":iss}),
        &EncodingKey::from_rsa_pem(&rsa).expect("RSA key"),
    )
    .expect("encode");
    let cases = [
        ("garbage".to_string(), "token is malformed: a JWT is three base64url parts"),
        (forged, "token signature does not verify"),
        (
            signed(json!({"sub":"alice","iss":iss,"exp":1_700_000_000})),
            "token expired at 2023-11-14T22:13:20Z (",
        ),
        (
            signed(json!({"sub":"alice","iss":"https://evil.example"})),
            "token issuer (`iss`) is \"https://evil.example\", but this broker accepts \"https://id.example.com\" only",
        ),
        (rs256, "token is signed with RS256, but this broker accepts HS256 tokens only"),
        (signed(json!({"iss":iss})), "token has no `sub` claim"),
    ];
    for (token, want) in &cases {
        let body = refusal_body(broker.addr, token).await;
        assert_eq!(body["code"], "unauthorized", "{body}");
        let message = body["message"].as_str().unwrap_or("");
        assert!(message.contains(want), "{token}: wanted {want:?} in {message:?}");
    }
    let log = broker.log();
    for (_, want) in &cases {
        let line = log.lines().find(|l| l.contains(want));
        assert!(
            line.is_some_and(|l| l.contains("INFO") && l.contains("websocket upgrade refused: 401")),
            "no log line with {want:?}:\n{log}"
        );
    }
    drop(secrets);
}

#[tokio::test]
async fn token_not_valid_yet_gets_401_and_says_so() {
    let broker = hs256_broker("").await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let later = encode(&Header::default(), &json!({"sub":"alice","nbf": now() + 60}), &key)
        .expect("encode");
    let body = refusal_body(broker.addr, &later).await;
    assert!(body["message"].as_str().unwrap_or("").contains("nbf"), "{body}");
    let valid_now =
        encode(&Header::default(), &json!({"sub":"alice","nbf": now() - 1}), &key).expect("encode");
    let mut c = common::Client::connect(&broker.url(&format!("/ws?token={valid_now}"))).await;
    c.subscribe("room.1").await;
    broker.shutdown().await;
}

/// On paused tokio time. The token's `exp` is checked against the system clock at the
/// upgrade, but the broker turns what is left of it into a tokio timer for the connection, so
/// once connected the close comes from that timer: auto-advance fires it as soon as both sides
/// wait, and a loaded machine cannot make the test late. The 2 s of `exp` are real time only
/// for the upgrade, which takes milliseconds.
#[tokio::test(start_paused = true)]
async fn token_expiring_mid_connection_closes_with_4003() {
    let broker = hs256_broker("").await;
    let exp = now() + 2;
    let mut c = broker.connect(&format!("token={}", token("alice", Some(exp)))).await;
    let connected = tokio::time::Instant::now();
    c.subscribe("user.alice").await;
    assert_eq!(c.expect_close().await, 4003);
    // `exp` is whole seconds: between one and two seconds were left at the upgrade.
    let lived = connected.elapsed();
    assert!(lived > Duration::from_millis(900) && lived <= Duration::from_secs(2), "{lived:?}");
    broker.shutdown().await;
}

#[tokio::test]
async fn every_permission_kind_is_enforced() {
    let broker = hs256_broker("").await;
    let mut anon = broker.connect("").await;
    let mut alice = broker.connect(&format!("token={}", token("alice", None))).await;

    // user == {id}
    alice.subscribe("user.alice").await;
    let e = alice.error(json!({"op":"subscribe","channel":"user.bob"}), "forbidden").await;
    assert!(e["message"].as_str().unwrap_or("").contains("alice"), "{e}");
    anon.error(json!({"op":"subscribe","channel":"user.alice"}), "forbidden").await;
    // authenticated
    alice.subscribe("room.1").await;
    anon.error(json!({"op":"subscribe","channel":"room.1"}), "forbidden").await;
    anon.error(json!({"op":"publish","channel":"room.1","data":1}), "forbidden").await;
    alice.publish("room.1", json!(1)).await;
    assert_eq!(alice.recv().await["data"], 1);
    // anyone / nobody
    anon.subscribe("news.today").await;
    alice.error(json!({"op":"publish","channel":"news.today","data":1}), "forbidden").await;
    anon.error(json!({"op":"publish","channel":"news.today","data":1}), "forbidden").await;
    anon.subscribe("open.x.y").await;
    anon.publish("open.x.y", json!("anon")).await;
    let m = anon.recv().await;
    assert_eq!(
        m,
        json!({"op":"message","channel":"open.x.y","data":"anon"}),
        "anonymous messages carry no user"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn clients_cannot_forge_the_user_field() {
    let broker = hs256_broker("").await;
    let mut alice = broker.connect(&format!("token={}", token("alice", None))).await;
    let mut anon = broker.connect("").await;
    alice.subscribe("open.chat").await;
    anon.ok(json!({"op":"publish","channel":"open.chat","data":{"text":"hi"},"user":"alice"}))
        .await;
    let m = alice.recv().await;
    assert_eq!(
        m,
        json!({"op":"message","channel":"open.chat","data":{"text":"hi"}}),
        "a client-sent user must be ignored"
    );
    alice.ok(json!({"op":"publish","channel":"open.chat","data":"me","user":"mallory"})).await;
    assert_eq!(alice.recv().await["user"], "alice");
    // Direct messages carry the verified sender too.
    let mut bob = broker.connect(&format!("token={}", token("bob", None))).await;
    bob.ok(json!({"op":"send","to":alice.conn,"data":"psst","user":"mallory"})).await;
    let d = alice.recv().await;
    assert_eq!(d, json!({"op":"direct","from":bob.conn,"data":"psst","user":"bob"}));
    alice.ok(json!({"op":"send","to":anon.conn,"data":"hey"})).await;
    assert_eq!(
        anon.recv().await,
        json!({"op":"direct","from":alice.conn,"data":"hey","user":"alice"})
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn send_takes_a_token_by_default_and_auth_send_decides() {
    let broker = hs256_broker("").await;
    let mut anon = broker.connect("").await;
    let mut alice = broker.connect(&format!("token={}", token("alice", None))).await;
    let e = anon.error(json!({"op":"send","to":alice.conn,"data":"hi"}), "forbidden").await;
    assert!(e["message"].as_str().unwrap_or("").contains("anonymous"), "{e}");
    alice.ok(json!({"op":"send","to":anon.conn,"data":"hi"})).await;
    assert_eq!(anon.recv().await["data"], "hi");
    // Refused before the id is even looked at: nothing to learn about who is connected.
    anon.error(json!({"op":"send","to":"nobody:1","data":"hi"}), "forbidden").await;
    drop((anon, alice));
    broker.shutdown().await;

    let open = hs256_broker("send = \"anyone\"").await;
    let mut anon = open.connect("").await;
    let alice = open.connect(&format!("token={}", token("alice", None))).await;
    anon.ok(json!({"op":"send","to":alice.conn,"data":"hi"})).await;
    drop((anon, alice));
    open.shutdown().await;

    // `nobody` closes WebSocket `send` even to users; the HTTP API, trusted by its key, still
    // reaches them.
    let keys = Secrets::new();
    let closed = hs256_broker(&format!("send = \"nobody\"\n{}", keys.api_keys("send-key"))).await;
    let mut alice = closed.connect(&format!("token={}", token("alice", None))).await;
    let bob = closed.connect(&format!("token={}", token("bob", None))).await;
    let e = alice.error(json!({"op":"send","to":bob.conn,"data":"hi"}), "forbidden").await;
    assert!(e["message"].as_str().unwrap_or("").contains("alice"), "{e}");
    let body = json!({"to":alice.conn,"data":"from the app"}).to_string();
    let (status, answer) = common::http(
        closed.addr,
        "POST",
        "/api/send",
        &[("Authorization", "Bearer send-key"), ("Content-Type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(alice.recv().await, json!({"op":"direct","from":"api","data":"from the app"}));
    drop((alice, bob));
    closed.shutdown().await;
}

#[tokio::test]
async fn a_token_is_refused_when_no_verification_is_configured() {
    let broker = TestBroker::start(common::OPEN_CONFIG).await;
    assert_eq!(
        refused_status(&broker.url(&format!("/ws?token={}", token("alice", None)))).await,
        401
    );
    broker.shutdown().await;
}

async fn asymmetric(algorithm: Algorithm, key_setting: &str, public: &str, private: &str) {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let toml = format!(
        "[auth]\n{key_setting} = \"{fixtures}/{public}\"\n[backends.local]\nkind = \"memory\"\n{ROUTES}"
    );
    let broker = TestBroker::start(&toml).await;
    let pem = std::fs::read(format!("{fixtures}/{private}")).expect("private key fixture");
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        _ => EncodingKey::from_ec_pem(&pem),
    }
    .expect("encoding key");
    let good = encode(&Header::new(algorithm), &json!({"sub":"carol","exp": now() + 60}), &key)
        .expect("encode");
    let mut carol = broker.connect(&format!("token={good}")).await;
    carol.subscribe("user.carol").await;
    // An HS256 token is not accepted by an asymmetric verifier (algorithm confusion).
    assert_eq!(
        refused_status(&broker.url(&format!("/ws?token={}", token("carol", None)))).await,
        401
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn rs256_tokens_verify_with_a_public_key_file() {
    asymmetric(
        Algorithm::RS256,
        "jwt_rs256_public_key_file",
        "rs256-public.pem",
        "rs256-private.pem",
    )
    .await;
}

#[tokio::test]
async fn es256_tokens_verify_with_a_public_key_file() {
    asymmetric(
        Algorithm::ES256,
        "jwt_es256_public_key_file",
        "es256-public.pem",
        "es256-private-pk8.pem",
    )
    .await;
}

#[tokio::test]
async fn a_missing_secret_variable_stops_the_start_with_a_clear_error() {
    let toml = "[auth]\njwt_hs256_secret_env = \"SWITCHYARD_TEST_SURELY_UNSET_VAR\"\n[backends.local]\nkind = \"memory\"\n";
    let err = match switchyard::broker::Broker::start(common::config(toml)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("broker started without its JWT secret"),
    };
    assert!(err.contains("SWITCHYARD_TEST_SURELY_UNSET_VAR"), "{err}");
}

#[tokio::test]
async fn a_missing_secret_file_stops_the_start_naming_the_key_and_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("jwt-secret");
    let toml = format!(
        "[auth]\njwt_hs256_secret_file = {:?}\n[backends.local]\nkind = \"memory\"\n",
        missing.to_str().expect("utf-8 temp path")
    );
    let err = match switchyard::broker::Broker::start(common::config(&toml)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("broker started without its JWT secret file"),
    };
    assert!(err.contains("auth.jwt_hs256_secret_file"), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
}
