//! [`AsyncRuntime`] on async-io timers and async-std's executor.

use std::time::Instant;

use tinker_core::io::{AsyncRuntime, BoxFuture};

/// Timers, clock and spawning for async-std (and smol: timers are async-io's, and tasks go to
/// async-std's global executor, which runs its own threads and so needs no `block_on` of its
/// own).
///
/// ```
/// use std::time::Duration;
/// use tinker_async_std::AsyncStdRuntime;
/// use tinker_core::io::AsyncRuntime;
///
/// smol::block_on(async {
///     let runtime = AsyncStdRuntime;
///     let deadline = runtime.now() + Duration::from_millis(5);
///     runtime.sleep_until(deadline).await;
///     assert!(runtime.now() >= deadline);
/// });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStdRuntime;

impl AsyncRuntime for AsyncStdRuntime {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            async_io::Timer::at(deadline).await;
        })
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // Dropping an async-std JoinHandle detaches the task (a smol `Task` would be cancelled).
        drop(async_std::task::spawn(task));
    }
}
