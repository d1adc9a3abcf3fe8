//! Building a [`ServiceClient`] bound to async-io timers and hyper (no tokio at run time).

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::SystemTime;

use tinker_core::client::{ClientIo, ClientOptions, ServiceClient};
use tinker_core::endpoints::Platform;
use tinker_core::io::AsyncRuntime;
use tinker_core::settings::Settings;
use tinker_core::Result;

use crate::{AsyncStdRuntime, HyperTransport};

/// A service client for `settings`. Works under async-std and under smol (or any executor: the
/// timers are async-io's and the housekeeper runs on async-std's global executor).
///
/// Sends nothing yet: the session starts with the first call that needs it.
///
/// # Errors
///
/// [`tinker_core::Error::Config`] without an API key or with a malformed base URL.
pub fn connect(settings: Settings) -> Result<ServiceClient> {
    connect_with(settings, ClientOptions::default())
}

/// [`connect`] with client options (deadlines, queue-state observer, session metadata).
pub fn connect_with(settings: Settings, options: ClientOptions) -> Result<ServiceClient> {
    let io = client_io(HyperTransport::new(), AsyncStdRuntime);
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

/// The I/O of an async-std client, for [`ServiceClient::new`] with a custom transport.
pub fn client_io(transport: HyperTransport, runtime: AsyncStdRuntime) -> ClientIo {
    let now = runtime.now();
    ClientIo {
        http: Arc::new(transport),
        runtime: Arc::new(runtime),
        wall_clock: (now, SystemTime::now()),
        platform: Platform::current(
            concat!("tinker-async-std ", env!("CARGO_PKG_VERSION")),
            "async:async-std",
        ),
    }
}
