//! [`AsyncRuntime`] on tokio: its timer, its clock and its spawner.

use std::time::Instant;

use tinker_core::io::{AsyncRuntime, BoxFuture};

/// Timers, clock and spawning of a tokio runtime.
///
/// It holds a [`tokio::runtime::Handle`], so background work is spawned onto the runtime the
/// client was created in even when a call comes from elsewhere.
///
/// ```
/// use std::time::Duration;
/// use tinker_core::io::AsyncRuntime;
/// use tinker_tokio::TokioRuntime;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let runtime = TokioRuntime::current();
/// let deadline = runtime.now() + Duration::from_millis(5);
/// runtime.sleep_until(deadline).await;
/// assert!(runtime.now() >= deadline);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
}

impl TokioRuntime {
    /// The runtime the caller is running in.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (use [`TokioRuntime::from_handle`] there).
    pub fn current() -> TokioRuntime {
        TokioRuntime {
            handle: tokio::runtime::Handle::current(),
        }
    }

    /// The runtime behind this handle.
    pub fn from_handle(handle: tokio::runtime::Handle) -> TokioRuntime {
        TokioRuntime { handle }
    }
}

impl AsyncRuntime for TokioRuntime {
    /// Read through tokio's clock, so tests with a paused clock (`tokio::time::pause`) see the
    /// same time as the timers.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
            deadline,
        )))
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // Detached: the housekeeper ends by itself when its client is dropped.
        drop(self.handle.spawn(task));
    }
}
