//! The end-to-end suite on tokio (reqwest), against the local server over loopback.

use std::time::Duration;

use tinker_core::client::{ClientOptions, ServiceClient};
use tinker_core::settings::Settings;
use tinker_testkit::scenarios::{Runtime, Sleep};

struct Tokio;

impl Runtime for Tokio {
    const NAME: &'static str = "tokio";
    const RL_SAMPLES: usize = 2048;
    fn connect(settings: Settings, options: ClientOptions) -> tinker_core::Result<ServiceClient> {
        tinker_tokio::connect_with(settings, options)
    }
    fn sleep(duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

tinker_testkit::e2e_suite!(Tokio, block_on);
