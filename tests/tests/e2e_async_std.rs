//! The end-to-end suite on async-std (hyper on async-io), run twice: under async-std's executor
//! and under `smol::block_on` on a thread with no tokio runtime.

use std::time::Duration;

use tinker_core::client::{ClientOptions, ServiceClient};
use tinker_core::settings::Settings;
use tinker_testkit::scenarios::{Runtime, Sleep};

struct AsyncStd;

impl Runtime for AsyncStd {
    const NAME: &'static str = "async-std";
    const RL_SAMPLES: usize = 512;
    fn connect(settings: Settings, options: ClientOptions) -> tinker_core::Result<ServiceClient> {
        tinker_async_std::connect_with(settings, options)
    }
    fn sleep(duration: Duration) -> Sleep {
        Box::pin(async_std::task::sleep(duration))
    }
}

mod on_async_std {
    use super::AsyncStd;
    tinker_testkit::e2e_suite!(AsyncStd, async_std::task::block_on);
}

mod on_smol {
    use super::AsyncStd;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        // The local server runs its own tokio runtime on another thread; this one has none.
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "no tokio runtime on the test thread"
        );
        smol::block_on(future)
    }

    tinker_testkit::e2e_suite!(AsyncStd, block_on);
}
