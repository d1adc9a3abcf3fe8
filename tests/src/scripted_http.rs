//! A tiny scripted HTTP/1.1 server for transport tests.
//!
//! The transports of the three runtime crates are tested against the same peer: a plain
//! `std::net` listener on `127.0.0.1:0` with one thread per connection, answering requests with
//! replies scripted in advance, in order. It records every request (method, target, headers,
//! body) and counts accepted connections, so a test can check what arrived and whether a
//! connection was reused. Faults are part of the script: a body sent in delayed chunks, a
//! connection cut in the middle of a body, a body that stalls after the head.
//!
//! It speaks just enough HTTP/1.1 for that: requests with a `Content-Length` body (or none),
//! keep-alive unless the request or the reply says `Connection: close`. Anything that does not
//! start like an HTTP request (a TLS ClientHello, say) gets a plain-text 400 and the connection
//! is closed.
//!
//! ```
//! use tinker_testkit::scripted_http::{Reply, ScriptedHttpServer};
//! use std::io::{Read, Write};
//!
//! let server = ScriptedHttpServer::start([Reply::new(404).body("no such model")]);
//! let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
//! conn.write_all(b"GET /x HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").unwrap();
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 404"));
//! assert!(answer.ends_with("no such model"));
//! assert_eq!(server.requests()[0].target, "/x");
//! ```

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a stalled reply holds its connection open at most, so a broken test cannot leak a
/// thread forever. Far above any read timeout a test uses.
const MAX_STALL: Duration = Duration::from_secs(30);

/// How the body of a scripted reply is sent.
#[derive(Debug, Clone)]
enum BodyScript {
    /// The whole body at once, with a `Content-Length`.
    Full(Vec<u8>),
    /// `Transfer-Encoding: chunked`, each chunk written (and flushed) after its delay.
    Chunks(Vec<(Duration, Vec<u8>)>),
    /// Announce `declared` bytes, send `sent`, then close the connection.
    CutAfter { sent: Vec<u8>, declared: usize },
    /// Announce `declared` bytes, send `sent`, then send nothing more while holding the
    /// connection open (until the server is dropped).
    StallAfter { sent: Vec<u8>, declared: usize },
}

/// One scripted answer to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: BodyScript,
    close: bool,
}

impl Reply {
    /// A reply with this status and an empty body.
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: BodyScript::Full(Vec::new()),
            close: false,
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sends this body at once, with a `Content-Length`.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = BodyScript::Full(body.into());
        self
    }

    /// Sends the body with chunked transfer encoding, writing each chunk after `delay`.
    pub fn chunked<C: Into<Vec<u8>>>(
        mut self,
        chunks: impl IntoIterator<Item = C>,
        delay: Duration,
    ) -> Reply {
        self.body = BodyScript::Chunks(chunks.into_iter().map(|c| (delay, c.into())).collect());
        self
    }

    /// Announces `declared` body bytes, sends `sent` (fewer), then closes the connection: the
    /// client sees the connection break in the middle of the body.
    pub fn cut_after(mut self, sent: impl Into<Vec<u8>>, declared: usize) -> Reply {
        let sent = sent.into();
        assert!(
            sent.len() < declared,
            "a cut body must be shorter than declared"
        );
        self.body = BodyScript::CutAfter { sent, declared };
        self
    }

    /// Announces `declared` body bytes, sends `sent` (fewer), then goes silent while keeping the
    /// connection open: the client's per-read timeout has to fire.
    pub fn stall_after(mut self, sent: impl Into<Vec<u8>>, declared: usize) -> Reply {
        let sent = sent.into();
        assert!(
            sent.len() < declared,
            "a stalled body must be shorter than declared"
        );
        self.body = BodyScript::StallAfter { sent, declared };
        self
    }

    /// Closes the connection after this reply (`Connection: close`).
    pub fn close(mut self) -> Reply {
        self.close = true;
        self
    }
}

/// A request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Which accepted connection carried it (0 for the first).
    pub connection: usize,
    /// The method, e.g. `POST`.
    pub method: String,
    /// The request target, e.g. `/api/v1/healthz?x=1`.
    pub target: String,
    /// The headers in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<RecordedRequest>>,
    accepted: AtomicUsize,
    stopped: AtomicBool,
}

/// A scripted HTTP/1.1 server on a loopback port; it stops when dropped.
pub struct ScriptedHttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl ScriptedHttpServer {
    /// Starts a server that answers requests with `replies`, in order (across connections).
    /// A request beyond the script gets a 500 saying so.
    pub fn start(replies: impl IntoIterator<Item = Reply>) -> ScriptedHttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            replies: Mutex::new(replies.into_iter().collect()),
            requests: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::spawn(move || accept_loop(listener, shared))
        };
        ScriptedHttpServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many TCP connections the server has accepted.
    pub fn accepted_connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptedHttpServer {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the acceptor sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// An address on which nothing listens: connecting to it is refused.
pub fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address")
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let connection = shared.accepted.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        thread::spawn(move || {
            // A broken connection ends that connection only; the client sees the error.
            let _ = serve_connection(stream, connection, &shared);
        });
    }
}

fn serve_connection(mut stream: TcpStream, connection: usize, shared: &Shared) -> io::Result<()> {
    let mut buffered = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buffered, connection)? else {
            return Ok(());
        };
        let client_closes = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        shared.requests.lock().unwrap().push(request);
        let mut reply = shared
            .replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Reply::new(500).body("no scripted reply left"));
        reply.close |= client_closes;
        if !write_reply(&mut stream, &reply, shared)? || reply.close {
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// Reads one request; `None` when the client closed the connection between requests.
fn read_request(
    stream: &mut TcpStream,
    buffered: &mut Vec<u8>,
    connection: usize,
) -> io::Result<Option<RecordedRequest>> {
    let head_end = loop {
        if let Some(at) = find(buffered, b"\r\n\r\n") {
            break at;
        }
        // Not HTTP (e.g. a TLS ClientHello): answer in plain text and hang up.
        if buffered.first().is_some_and(|b| !b.is_ascii_uppercase()) {
            stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")?;
            return Ok(None);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buffered.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffered[..head_end]).into_owned();
    buffered.drain(..head_end + 4);

    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    while buffered.len() < length {
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffered.extend_from_slice(&chunk[..n]);
    }
    let body = buffered.drain(..length).collect();
    Ok(Some(RecordedRequest {
        connection,
        method,
        target,
        headers,
        body,
    }))
}

/// Writes one reply; `false` when the connection must not be reused.
fn write_reply(stream: &mut TcpStream, reply: &Reply, shared: &Shared) -> io::Result<bool> {
    let mut head = format!("HTTP/1.1 {} Scripted\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if reply.close {
        head.push_str("connection: close\r\n");
    }
    match &reply.body {
        BodyScript::Full(body) => {
            head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
            stream.write_all(head.as_bytes())?;
            stream.write_all(body)?;
            stream.flush()?;
            Ok(true)
        }
        BodyScript::Chunks(chunks) => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            stream.write_all(head.as_bytes())?;
            stream.flush()?;
            for (delay, chunk) in chunks {
                thread::sleep(*delay);
                stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                stream.write_all(chunk)?;
                stream.write_all(b"\r\n")?;
                stream.flush()?;
            }
            stream.write_all(b"0\r\n\r\n")?;
            stream.flush()?;
            Ok(true)
        }
        BodyScript::CutAfter { sent, declared } => {
            head.push_str(&format!("content-length: {declared}\r\n\r\n"));
            stream.write_all(head.as_bytes())?;
            stream.write_all(sent)?;
            stream.flush()?;
            Ok(false)
        }
        BodyScript::StallAfter { sent, declared } => {
            head.push_str(&format!("content-length: {declared}\r\n\r\n"));
            stream.write_all(head.as_bytes())?;
            stream.write_all(sent)?;
            stream.flush()?;
            let started = Instant::now();
            while !shared.stopped.load(Ordering::SeqCst) && started.elapsed() < MAX_STALL {
                thread::sleep(Duration::from_millis(20));
            }
            Ok(false)
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
