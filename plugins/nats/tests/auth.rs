//! Credentials against a real nats-server that demands them: the right token, or user and
//! password, connects and carries messages; wrong ones leave the backend unavailable (not
//! ready, publishes refused at once) rather than hanging, and the secret stays out of errors.

use std::time::Duration;

use bytes::Bytes;
use switchyard_backend::conformance::{next, unique};
use switchyard_backend::{Backend, BackendError, Credentials};
use switchyard_nats::testing::{NatsServer, TestAuth};
use switchyard_nats::{wait_ready, NatsBackend, NatsOptions};

async fn connect(url: String, auth: Credentials) -> NatsBackend {
    let options = NatsOptions { servers: vec![url], auth, ..Default::default() };
    NatsBackend::connect(options).await.expect("valid options connect in the background")
}

async fn carries_messages(backend: &NatsBackend) {
    wait_ready(backend, Duration::from_secs(10)).await.expect("ready with the right credentials");
    let mut incoming = backend.take_incoming().expect("incoming");
    let channel = unique("auth");
    backend.subscribe(&channel).await.expect("subscribe");
    let reached = backend.publish(&channel, Bytes::from_static(b"hi")).await.expect("publish");
    assert_eq!(reached, 1);
    assert_eq!(next(&mut incoming, "hi").await.payload, Bytes::from_static(b"hi"));
}

async fn refused(backend: &NatsBackend, secret: &str) {
    // Long enough for several connect attempts, each answered with an authorization error.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready = backend.ready().await;
    assert!(matches!(ready, Err(BackendError::Unavailable(_))), "{ready:?}");
    let publish = backend.publish("anything", Bytes::from_static(b"no"));
    let answer = tokio::time::timeout(Duration::from_secs(5), publish)
        .await
        .expect("a publish is answered, never left hanging");
    assert!(matches!(answer, Err(BackendError::Unavailable(_))), "{answer:?}");
    for shown in [format!("{ready:?}"), format!("{answer:?}")] {
        assert!(!shown.contains(secret), "the secret shows in {shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_token_takes_the_right_one_only() {
    let token = TestAuth::Token("t0k-9f2c".into());
    let server = tokio::task::block_in_place(|| NatsServer::start_with(token, Vec::new()));
    carries_messages(&connect(server.url(), Credentials::Token("t0k-9f2c".into())).await).await;
    let wrong = connect(server.url(), Credentials::Token("guessed-7a1b".into())).await;
    refused(&wrong, "guessed-7a1b").await;
    refused(&connect(server.url(), Credentials::None).await, "t0k-9f2c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_users_takes_the_right_password_only() {
    let user = TestAuth::UserPassword("broker".into(), "pw-31d8".into());
    let server = tokio::task::block_in_place(|| NatsServer::start_with(user, Vec::new()));
    let right = Credentials::UserPassword { user: "broker".into(), password: "pw-31d8".into() };
    carries_messages(&connect(server.url(), right).await).await;
    let wrong = Credentials::UserPassword { user: "broker".into(), password: "pw-wrong".into() };
    refused(&connect(server.url(), wrong).await, "pw-wrong").await;
}
