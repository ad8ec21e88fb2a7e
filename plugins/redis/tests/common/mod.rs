//! Helpers shared by the standalone and cluster fault tests.

use std::time::Duration;

use bytes::Bytes;
use switchyard_backend::{Backend, Incoming};

/// Publishes until a message arrives with the expected prefix: after a fault the first
/// publishes may be refused or land before the re-subscription. Fails after `within`.
pub async fn publish_until_delivered(
    publisher: &dyn Backend,
    incoming: &mut Incoming,
    channel: &str,
    what: &str,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let payload = format!("{what} #{attempt}");
        let _ = publisher.publish(channel, Bytes::from(payload)).await;
        match tokio::time::timeout(Duration::from_millis(300), incoming.recv()).await {
            Ok(Some(m)) => {
                assert_eq!(&*m.channel, channel);
                assert!(
                    m.payload.starts_with(what.as_bytes()),
                    "unexpected payload {:?}",
                    m.payload
                );
                // Drain copies of earlier attempts that raced with this one.
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(100), incoming.recv()).await
                {
                }
                return;
            }
            Ok(None) => panic!("incoming ended"),
            Err(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "delivery on {channel} did not resume ({what})"
            ),
        }
    }
}
