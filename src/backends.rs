//! Builds the backend a `[backends.NAME]` table asks for. Each backend kind sits behind a cargo
//! feature so a build can leave out what it does not need.

use std::sync::Arc;

use switchyard_backend::{Backend, BackendError};

use crate::config::{BackendConfig, BackendKind};

pub async fn build(config: &BackendConfig) -> Result<Arc<dyn Backend>, BackendError> {
    match &config.kind {
        #[cfg(feature = "memory")]
        BackendKind::Memory => Ok(Arc::new(switchyard_memory::MemoryBackend::new())),
        other => Err(BackendError::Invalid(format!(
            "backend kind {:?} is not compiled into this build",
            other.name()
        ))),
    }
}
