//! Builds the backend a `[backends.NAME]` table asks for. Each backend kind sits behind a cargo
//! feature so a build can leave out what it does not need.

use std::sync::Arc;

use switchyard_backend::{Backend, BackendError};

use crate::config::{BackendConfig, BackendKind};

/// Builds one backend. Networked backends start even when their servers are unreachable: they
/// report not ready and reconnect by themselves.
pub(crate) async fn build(config: &BackendConfig) -> Result<Arc<dyn Backend>, BackendError> {
    match &config.kind {
        #[cfg(feature = "memory")]
        BackendKind::Memory => Ok(Arc::new(switchyard_memory::MemoryBackend::new())),
        #[cfg(feature = "redis")]
        BackendKind::Redis {
            url,
            subscriber_connections,
            publisher_connections,
            batch_delay,
            tls,
        } => {
            let mut options =
                switchyard_redis::RedisOptions { url: url.clone(), ..Default::default() };
            options.connection.tls = tls.clone();
            if let Some(n) = subscriber_connections {
                options.subscriber_connections = *n;
            }
            if let Some(n) = publisher_connections {
                options.publisher_connections = *n;
            }
            if let Some(d) = batch_delay {
                options.connection.batch_delay = *d;
            }
            Ok(Arc::new(switchyard_redis::RedisBackend::connect(options)?))
        }
        #[cfg(feature = "redis")]
        BackendKind::RedisCluster { nodes, publisher_connections, batch_delay, tls } => {
            let mut options = switchyard_redis::RedisClusterOptions {
                nodes: nodes.clone(),
                ..Default::default()
            };
            options.connection.tls = tls.clone();
            if let Some(n) = publisher_connections {
                options.publisher_connections_per_master = *n;
            }
            if let Some(d) = batch_delay {
                options.connection.batch_delay = *d;
            }
            Ok(Arc::new(switchyard_redis::RedisClusterBackend::connect(options)?))
        }
        #[cfg(feature = "nats")]
        BackendKind::Nats { servers, auth, tls } => {
            let options = switchyard_nats::NatsOptions {
                servers: servers.clone(),
                auth: auth.clone(),
                tls: tls.clone(),
                ..Default::default()
            };
            Ok(Arc::new(switchyard_nats::NatsBackend::connect(options).await?))
        }
        #[allow(unreachable_patterns)]
        other => Err(BackendError::Invalid(format!(
            "backend kind {:?} is not compiled into this build",
            other.name()
        ))),
    }
}
