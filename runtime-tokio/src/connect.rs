//! Building a [`ServiceClient`] bound to tokio and reqwest.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::SystemTime;

use tinker_core::client::{ClientIo, ClientOptions, ServiceClient};
use tinker_core::endpoints::Platform;
use tinker_core::io::AsyncRuntime;
use tinker_core::settings::Settings;
use tinker_core::{Error, Result};

use crate::{ReqwestTransport, TokioRuntime};

/// A service client for `settings`, on the tokio runtime the caller runs in.
///
/// Sends nothing yet: the session starts with the first call that needs it.
///
/// # Errors
///
/// [`Error::Config`] without an API key, with a malformed base URL, or outside a tokio runtime.
pub fn connect(settings: Settings) -> Result<ServiceClient> {
    connect_with(settings, ClientOptions::default())
}

/// [`connect`] with client options (deadlines, queue-state observer, session metadata).
pub fn connect_with(settings: Settings, options: ClientOptions) -> Result<ServiceClient> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::Config("tinker_tokio::connect must be called from inside a tokio runtime".into())
    })?;
    let io = client_io(ReqwestTransport::new(), TokioRuntime::from_handle(handle));
    // A fresh seed per client: RandomState keys come from the OS, mixed with the clock.
    let entropy = std::collections::hash_map::RandomState::new().hash_one(SystemTime::now());
    ServiceClient::new(settings, io, options.with_seed_if_unset(entropy))
}

/// [`connect`] with settings read from the environment (`TINKER_API_KEY`, `TINKER_BASE_URL`, …),
/// then the stored login of `tinker auth login` as the last credential source
/// ([`Settings::from_env_and_stored_login`]).
pub fn connect_from_env() -> Result<ServiceClient> {
    connect(Settings::from_env_and_stored_login(|path| {
        std::fs::read_to_string(path)
    })?)
}

/// The I/O of a tokio client, for [`ServiceClient::new`] with a custom transport (e.g. other
/// TLS roots).
pub fn client_io(transport: ReqwestTransport, runtime: TokioRuntime) -> ClientIo {
    let now = runtime.now();
    ClientIo {
        http: Arc::new(transport),
        runtime: Arc::new(runtime),
        wall_clock: (now, SystemTime::now()),
        platform: Platform::current(
            concat!("tinker-tokio ", env!("CARGO_PKG_VERSION")),
            "async:tokio",
        ),
    }
}
