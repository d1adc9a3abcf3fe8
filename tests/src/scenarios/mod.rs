//! The end-to-end scenario suite (workloads.md section 4), written once over the async clients of
//! `tinker_core::client` and run by every runtime crate against a [`LocalServer`] over loopback.
//!
//! A runtime instantiates the suite with [`e2e_suite!`](crate::e2e_suite): it names how to build
//! a service client on its I/O ([`Runtime::connect`]), how to sleep, and how to run a future to
//! completion (its executor). Each scenario starts its own server, tells a story (a user's job),
//! and checks what that user would observe plus what the server recorded.
//!
//! The blocking crate's clients are thin wrappers that run these same async methods with its
//! `block_on` over ureq, so its instantiation exercises the blocking I/O stack end to end.
//!
//! [`LocalServer`]: crate::LocalServer

mod custom_scenarios;
mod data;
mod fault_scenarios;
mod rest_scenarios;
mod server_loss_scenarios;
mod streaming_scenarios;
mod training_scenarios;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tinker_core::client::{ClientOptions, ServiceClient};
use tinker_core::settings::Settings;
use tinker_core::Result;

use crate::server::{BackgroundServer, LocalServer, LocalServerConfig};

pub use custom_scenarios::custom_dpo_with_reference_sampler;
pub use data::{batch, counting_datum, mean_nll, settings_or_local_server, BASE_MODEL};
pub use fault_scenarios::{
    a12_eval_with_per_example_timeouts, a7_error_storm, a8_session_expiry, a9_hung_and_stalled,
};
pub use rest_scenarios::a11_checkpoint_management;
pub use server_loss_scenarios::server_side_custom_loss_matches_the_client_side_path;
pub use streaming_scenarios::sample_stream_matches_sample;
pub use training_scenarios::{
    a10_save_is_idempotent, a1_sft_checkpoint_sample, a2_resume_with_optimizer, a3_rl_fan_out,
    cancellation_leaves_the_client_usable,
};

/// A boxed sleep future.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a runtime provides to the suite.
pub trait Runtime: 'static {
    /// A short name for messages (`tokio`, `async-std`, `blocking`).
    const NAME: &'static str;
    /// How many concurrent single samples the RL scenario (A3) sends on this runtime.
    const RL_SAMPLES: usize;
    /// A service client on this runtime's I/O.
    fn connect(settings: Settings, options: ClientOptions) -> Result<ServiceClient>;
    /// Sleeps on this runtime.
    fn sleep(duration: Duration) -> Sleep;
}

/// One scenario's world: a fresh local server and a way to connect to it.
pub struct Env<R: Runtime> {
    server: BackgroundServer,
    _runtime: std::marker::PhantomData<R>,
}

impl<R: Runtime> Env<R> {
    /// Starts a local server with `config`.
    pub fn new(config: LocalServerConfig) -> Env<R> {
        let server = LocalServer::start_background(config).expect("the local server starts");
        Env {
            server,
            _runtime: std::marker::PhantomData,
        }
    }

    /// The server (recording, faults).
    pub fn server(&self) -> &BackgroundServer {
        &self.server
    }

    /// Settings pointing at the server (telemetry on: it is part of what is exercised).
    pub fn settings(&self) -> Settings {
        Settings::default()
            .with_base_url(self.server.url())
            .with_api_key(self.server.api_key())
            .expect("the server's key is valid")
    }

    /// A client with a fixed seed (reproducible idempotency keys and jitter).
    pub fn connect(&self) -> ServiceClient {
        self.connect_with(ClientOptions::default())
    }

    /// A client with these options (seed fixed unless set).
    pub fn connect_with(&self, mut options: ClientOptions) -> ServiceClient {
        if options.seed.is_none() {
            options = options.with_seed(7);
        }
        R::connect(self.settings(), options).expect("connect")
    }
}

/// Instantiates the whole suite for a runtime: one `#[test]` per scenario.
///
/// ```ignore
/// tinker_testkit::e2e_suite!(Tokio, |future| tokio_runtime().block_on(future));
/// ```
#[macro_export]
macro_rules! e2e_suite {
    ($runtime:ty, $block_on:expr) => {
        $crate::e2e_suite!(@tests $runtime, $block_on;
            a1_sft_checkpoint_sample,
            a2_resume_with_optimizer,
            a10_save_is_idempotent,
            a11_checkpoint_management,
            cancellation_leaves_the_client_usable,
            a9_hung_and_stalled,
            a3_rl_fan_out,
            a7_error_storm,
            a8_session_expiry,
            a12_eval_with_per_example_timeouts,
            custom_dpo_with_reference_sampler,
            server_side_custom_loss_matches_the_client_side_path,
            sample_stream_matches_sample,
        );
    };
    (@tests $runtime:ty, $block_on:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let run = $block_on;
                run($crate::scenarios::$name::<$runtime>());
            }
        )*
    };
}
