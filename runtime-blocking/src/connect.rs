//! Building a blocking [`ServiceClient`] on ureq and plain threads.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::SystemTime;

use tinker_core::client::{self as core, ClientIo, ClientOptions};
use tinker_core::endpoints::Platform;
use tinker_core::io::AsyncRuntime;
use tinker_core::settings::Settings;
use tinker_core::Result;

use crate::executor::{BlockingTransport, ThreadRuntime};
use crate::{ServiceClient, UreqTransport};

/// A blocking service client for `settings`. Sends nothing yet: the session starts with the
/// first call that needs it.
///
/// # Errors
///
/// [`tinker_core::Error::Config`] without an API key or with a malformed base URL.
pub fn connect(settings: Settings) -> Result<ServiceClient> {
    connect_with(settings, ClientOptions::default())
}

/// [`connect`] with client options (deadlines, queue-state observer, session metadata).
pub fn connect_with(settings: Settings, options: ClientOptions) -> Result<ServiceClient> {
    let io = client_io(UreqTransport::new());
    // A fresh seed per client: RandomState keys come from the OS, mixed with the clock.
    let entropy = std::collections::hash_map::RandomState::new().hash_one(SystemTime::now());
    core::ServiceClient::new(settings, io, options.with_seed_if_unset(entropy))
        .map(ServiceClient::from_core)
}

/// [`connect`] with settings read from the environment (`TINKER_API_KEY`, `TINKER_BASE_URL`, …),
/// and the key stored by `tinker auth login` when the environment names no credential
/// ([`crate::credentials::settings_from_env`]).
pub fn connect_from_env() -> Result<ServiceClient> {
    connect(crate::credentials::settings_from_env()?)
}

/// The I/O of a blocking client, for `tinker_core::client::ServiceClient::new` with a custom
/// ureq transport.
pub fn client_io(transport: UreqTransport) -> ClientIo {
    let runtime = ThreadRuntime;
    ClientIo {
        http: Arc::new(BlockingTransport::new(transport)),
        wall_clock: (runtime.now(), SystemTime::now()),
        runtime: Arc::new(runtime),
        platform: Platform::current(
            concat!("tinker-blocking ", env!("CARGO_PKG_VERSION")),
            "false",
        ),
    }
}
