//! How the async client layer runs on plain threads: a minimal `block_on`, a timer thread, the
//! ureq transport seen as an [`AsyncHttp`], and threads for background work.
//!
//! The clients of `tinker_core::client` are written once, as async code. The blocking clients
//! run each call to completion on the calling thread with [`block_on`]: the future is polled
//! there and the thread parks until a waker unparks it. Each HTTP request runs on a short-lived
//! thread of its own ([`BlockingTransport`]) that wakes the caller when the response is complete,
//! so a call's deadline can end a wait the server holds open and a call's several requests go out
//! together. Sleeps are registered with one shared timer thread; waits on the shared ledger (turn
//! order, budgets) use the ledger's own wakers. The housekeeper runs on its own thread.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io::Read;
use std::pin::{pin, Pin};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Instant;

use bytes::Bytes;
use tinker_core::io::{
    AsyncBody, AsyncHttp, AsyncResponse, AsyncRuntime, BlockingClock, BlockingHttp, BoxFuture,
    Timeouts, TransportError, TransportErrorKind,
};

use crate::{transport_error_of, SystemClock, UreqTransport};

/// Size of one body read.
const READ_CHUNK: usize = 64 * 1024;

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on the calling thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        // A spurious unpark only costs one extra poll.
        std::thread::park();
    }
}

/// One thread that wakes sleeping tasks at their deadlines.
struct TimerThread {
    queue: Mutex<BinaryHeap<Reverse<Entry>>>,
    changed: Condvar,
}

struct Entry {
    at: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

fn timer() -> &'static TimerThread {
    static TIMER: OnceLock<&'static TimerThread> = OnceLock::new();
    TIMER.get_or_init(|| {
        let t: &'static TimerThread = Box::leak(Box::new(TimerThread {
            queue: Mutex::new(BinaryHeap::new()),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("tinker-timer".into())
            .spawn(move || t.run())
            .expect("the timer thread can be started");
        t
    })
}

impl TimerThread {
    fn register(&self, at: Instant, waker: Waker) {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.push(Reverse(Entry { at, seq, waker }));
        drop(q);
        self.changed.notify_one();
    }

    fn run(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            while q.peek().is_some_and(|Reverse(e)| e.at <= now) {
                if let Some(Reverse(e)) = q.pop() {
                    e.waker.wake();
                }
            }
            q = match q.peek().map(|Reverse(e)| e.at) {
                Some(at) => {
                    self.changed
                        .wait_timeout(q, at.saturating_duration_since(now))
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.changed.wait(q).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

/// A future that completes at a deadline, woken by the timer thread.
struct Sleep {
    at: Instant,
    waker: Option<Waker>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if SystemClock.now() >= self.at {
            return Poll::Ready(());
        }
        // Re-registered when polled with another waker, so the latest task is the one woken (a
        // stale entry only costs one spurious poll).
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
            timer().register(self.at, cx.waker().clone());
        }
        Poll::Pending
    }
}

/// [`AsyncRuntime`] for plain threads: the system clock, the timer thread, and a thread per
/// spawned task (only the housekeeper is spawned, once per service client).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadRuntime;

impl AsyncRuntime for ThreadRuntime {
    fn now(&self) -> Instant {
        SystemClock.now()
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(Sleep {
            at: deadline,
            waker: None,
        })
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        let spawned = std::thread::Builder::new()
            .name("tinker-housekeeper".into())
            .spawn(move || block_on(task));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the housekeeper thread; heartbeats and telemetry are off");
        }
    }
}

/// The ureq transport seen as an [`AsyncHttp`]: each request (head and whole body) runs on its
/// own short-lived thread and completes the awaiting future through a waker.
///
/// Blocking inside `poll` would also work for a single call, but then a call's deadline could not
/// interrupt a request the server holds open, and several futures driven by one `block_on`
/// (a `forward_backward` split into chunks, a batch of samples joined together) would run one
/// after another. A thread per request keeps both right at the cost of a thread spawn per HTTP
/// request, which is small next to a network round trip. A request whose call was abandoned
/// cannot be aborted: its thread finishes it (bounded by the per-read timeout) and the response
/// is dropped.
#[derive(Debug, Clone, Default)]
pub struct BlockingTransport {
    inner: UreqTransport,
}

impl BlockingTransport {
    /// Wraps a ureq transport.
    pub fn new(inner: UreqTransport) -> BlockingTransport {
        BlockingTransport { inner }
    }
}

type Exchange = Result<(http::response::Parts, Bytes), TransportError>;

/// The slot a request thread fills and the awaiting future reads.
#[derive(Default)]
struct Slot {
    result: Option<Exchange>,
    waker: Option<Waker>,
}

struct Receive {
    slot: Arc<Mutex<Slot>>,
}

impl Future for Receive {
    type Output = Exchange;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Exchange> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match slot.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

fn exchange(
    transport: &UreqTransport,
    request: http::Request<Bytes>,
    timeouts: Timeouts,
) -> Exchange {
    let response = transport.send(request, timeouts)?;
    let mut reader = response.body;
    let mut body = Vec::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(transport_error_of(&e)
                    .cloned()
                    .unwrap_or_else(|| TransportError::new(TransportErrorKind::Io, e.to_string())))
            }
        }
    }
    Ok((response.head, Bytes::from(body)))
}

#[async_trait::async_trait]
impl AsyncHttp for BlockingTransport {
    async fn send(
        &self,
        request: http::Request<Bytes>,
        timeouts: Timeouts,
    ) -> Result<AsyncResponse, TransportError> {
        if is_event_stream(&request) {
            return send_streaming(self.inner.clone(), request, timeouts).await;
        }
        let slot = Arc::new(Mutex::new(Slot::default()));
        let filled = slot.clone();
        let transport = self.inner.clone();
        std::thread::Builder::new()
            .name("tinker-http".into())
            .spawn(move || {
                let result = exchange(&transport, request, timeouts);
                let waker = {
                    let mut s = filled.lock().unwrap_or_else(|p| p.into_inner());
                    s.result = Some(result);
                    s.waker.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            })
            .map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Other,
                    format!("could not start a request thread: {e}"),
                )
            })?;
        let (head, body) = Receive { slot }.await?;
        Ok(AsyncResponse {
            head,
            body: Box::new(WholeBody { body: Some(body) }),
        })
    }
}

fn is_event_stream(request: &http::Request<Bytes>) -> bool {
    request
        .headers()
        .get(http::header::ACCEPT)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// What a streaming request thread hands over: the head, then body chunks as they are read.
#[derive(Default)]
struct Streamed {
    head: Option<Result<http::response::Parts, TransportError>>,
    chunks: std::collections::VecDeque<Result<Bytes, TransportError>>,
    ended: bool,
    /// The body was dropped: the thread stops reading and closes the connection.
    dropped: bool,
    waker: Option<Waker>,
}

fn lock_streamed(s: &Mutex<Streamed>) -> std::sync::MutexGuard<'_, Streamed> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// A server-sent-events request: unlike the others its body is handed over chunk by chunk as
/// the request thread reads it, so a stream's events arrive as the server sends them, and
/// dropping the body ends the thread (after its current read) and with it the connection.
async fn send_streaming(
    transport: UreqTransport,
    request: http::Request<Bytes>,
    timeouts: Timeouts,
) -> Result<AsyncResponse, TransportError> {
    let shared = Arc::new(Mutex::new(Streamed::default()));
    let filled = shared.clone();
    let update = move |f: &mut dyn FnMut(&mut Streamed)| -> bool {
        let (waker, dropped) = {
            let mut s = lock_streamed(&filled);
            f(&mut s);
            (s.waker.take(), s.dropped)
        };
        if let Some(w) = waker {
            w.wake();
        }
        !dropped
    };
    std::thread::Builder::new()
        .name("tinker-http-stream".into())
        .spawn(move || {
            let response = match transport.send(request, timeouts) {
                Ok(r) => r,
                Err(e) => {
                    update(&mut |s| s.head = Some(Err(e.clone())));
                    return;
                }
            };
            let mut reader = response.body;
            let mut head = Some(response.head);
            if !update(&mut |s| s.head = head.take().map(Ok)) {
                return;
            }
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                let read = reader.read(&mut buf);
                let go_on = match read {
                    Ok(0) => {
                        update(&mut |s| s.ended = true);
                        return;
                    }
                    Ok(n) => {
                        update(&mut |s| s.chunks.push_back(Ok(Bytes::copy_from_slice(&buf[..n]))))
                    }
                    Err(ref e) if e.kind() == std::io::ErrorKind::Interrupted => true,
                    Err(e) => {
                        let error = transport_error_of(&e).cloned().unwrap_or_else(|| {
                            TransportError::new(TransportErrorKind::Io, e.to_string())
                        });
                        update(&mut |s| {
                            s.chunks.push_back(Err(error.clone()));
                            s.ended = true;
                        });
                        return;
                    }
                };
                if !go_on {
                    return;
                }
            }
        })
        .map_err(|e| {
            TransportError::new(
                TransportErrorKind::Other,
                format!("could not start a request thread: {e}"),
            )
        })?;
    let head = std::future::poll_fn(|cx| {
        let mut s = lock_streamed(&shared);
        match s.head.take() {
            Some(h) => Poll::Ready(h),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await;
    let body = StreamedBody { shared };
    Ok(AsyncResponse {
        head: head?,
        body: Box::new(body),
    })
}

struct StreamedBody {
    shared: Arc<Mutex<Streamed>>,
}

impl Drop for StreamedBody {
    fn drop(&mut self) {
        lock_streamed(&self.shared).dropped = true;
    }
}

#[async_trait::async_trait]
impl AsyncBody for StreamedBody {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, TransportError>> {
        std::future::poll_fn(|cx| {
            let mut s = lock_streamed(&self.shared);
            if let Some(chunk) = s.chunks.pop_front() {
                return Poll::Ready(Some(chunk));
            }
            if s.ended {
                return Poll::Ready(None);
            }
            s.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// A body already read in full by the request thread.
struct WholeBody {
    body: Option<Bytes>,
}

#[async_trait::async_trait]
impl AsyncBody for WholeBody {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, TransportError>> {
        self.body.take().filter(|b| !b.is_empty()).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sleeps_end_in_deadline_order_on_one_thread() {
        let start = Instant::now();
        let rt = ThreadRuntime;
        let order = Arc::new(Mutex::new(Vec::new()));
        let a = {
            let order = order.clone();
            let sleep = rt.sleep_until(start + Duration::from_millis(30));
            async move {
                sleep.await;
                order.lock().unwrap().push("late");
            }
        };
        let b = {
            let order = order.clone();
            let sleep = rt.sleep_until(start + Duration::from_millis(5));
            async move {
                sleep.await;
                order.lock().unwrap().push("early");
            }
        };
        block_on(async {
            let mut a = Box::pin(a);
            let mut b = Box::pin(b);
            let (mut da, mut db) = (false, false);
            std::future::poll_fn(|cx| {
                da = da || a.as_mut().poll(cx).is_ready();
                db = db || b.as_mut().poll(cx).is_ready();
                if da && db {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await
        });
        assert_eq!(*order.lock().unwrap(), ["early", "late"]);
        assert!(Instant::now() >= start + Duration::from_millis(30));
    }
}
