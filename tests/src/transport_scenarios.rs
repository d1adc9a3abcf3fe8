//! The transport scenarios every async runtime crate runs against the scripted loopback server
//! ([`ScriptedHttpServer`]): status and body handling, headers, streaming, the error kinds of
//! each failure, connection reuse, the redirect policy, the runtime's clock and spawner.
//!
//! A runtime crate instantiates them with [`transport_suite!`](crate::transport_suite), naming
//! its transport and runtime ([`TransportUnderTest`]) and an executor to run each scenario on.
//! What differs between transports (which encodings they ask for) stays in the crate's own test
//! file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tinker_core::io::{
    AsyncHttp, AsyncResponse, AsyncRuntime, Timeouts, TransportError, TransportErrorKind,
};

use crate::scripted_http::{refused_addr, Reply, ScriptedHttpServer};

/// The transport and runtime a crate tests.
pub trait TransportUnderTest: 'static {
    /// A fresh transport (its own connection pool).
    fn transport() -> Box<dyn AsyncHttp>;
    /// The runtime (clock, sleeps, spawner).
    fn runtime() -> Arc<dyn AsyncRuntime>;
}

/// Short timeouts so the failure scenarios finish quickly; the assertions are about error kinds.
pub const QUICK: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    read: Duration::from_millis(300),
};

fn get(url: &str) -> http::Request<Bytes> {
    http::Request::get(url).body(Bytes::new()).unwrap()
}

/// Reads a response body to its end.
pub async fn read_body(response: &mut AsyncResponse) -> Result<Vec<u8>, TransportError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.body.next_chunk().await {
        body.extend_from_slice(&chunk?);
    }
    Ok(body)
}

/// The JSON body of [`post_with_credentials`].
const POST_BODY: &[u8] = b"{\"model\":\"x\"}";

/// A POST carrying the API key, a bearer token and a JSON body, as the SDK sends them.
fn post_with_credentials(url: &str) -> http::Request<Bytes> {
    http::Request::post(url)
        .header("x-api-key", "tml-secret")
        .header("authorization", "Bearer jwt")
        .header("content-type", "application/json")
        .header("idempotency-key", "k-1")
        .body(Bytes::from_static(POST_BODY))
        .unwrap()
}

pub async fn a_404_is_a_response_with_its_body<T: TransportUnderTest>() {
    let server = ScriptedHttpServer::start([Reply::new(404)
        .header("content-type", "application/json")
        .body(r#"{"detail":"model not found"}"#)]);
    let transport = T::transport();

    let mut response = transport
        .send(get(&server.url("/api/v1/models/x")), Timeouts::default())
        .await
        .expect("a 404 is not a transport error");

    assert_eq!(response.head.status, 404);
    assert_eq!(response.head.headers["content-type"], "application/json");
    assert_eq!(
        read_body(&mut response).await.unwrap(),
        br#"{"detail":"model not found"}"#
    );
}

pub async fn a_post_arrives_with_its_headers_and_body_intact<T: TransportUnderTest>() {
    let server = ScriptedHttpServer::start([Reply::new(200).body("{}")]);
    let transport = T::transport();
    let payload = Bytes::from_static(b"\x0a\x03abc\x00\xff binary protobuf");
    let request = http::Request::post(server.url("/api/v1/forward_backward?x=1"))
        .header("content-type", "application/x-protobuf")
        .header("x-api-key", "tml-secret")
        .header("idempotency-key", "k-1")
        .body(payload.clone())
        .unwrap();

    let mut response = transport.send(request, Timeouts::default()).await.unwrap();
    read_body(&mut response).await.unwrap();

    let recorded = &server.requests()[0];
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.target, "/api/v1/forward_backward?x=1");
    assert_eq!(
        recorded.header("content-type"),
        Some("application/x-protobuf")
    );
    assert_eq!(recorded.header("x-api-key"), Some("tml-secret"));
    assert_eq!(recorded.header("idempotency-key"), Some("k-1"));
    assert_eq!(recorded.body, payload);
}

pub async fn a_body_sent_in_delayed_chunks_arrives_in_order<T: TransportUnderTest>() {
    let parts = ["data: one\n\n", "data: two\n\n", "data: three\n\n"];
    let server =
        ScriptedHttpServer::start([Reply::new(200).chunked(parts, Duration::from_millis(30))]);
    let transport = T::transport();

    let mut response = transport
        .send(get(&server.url("/stream")), Timeouts::default())
        .await
        .unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = response.body.next_chunk().await {
        chunks.push(chunk.unwrap());
    }

    assert!(chunks.len() > 1, "the body was streamed, not buffered");
    assert_eq!(chunks.concat(), parts.concat().as_bytes());
}

pub async fn a_refused_connection_is_a_connect_error<T: TransportUnderTest>() {
    let addr = refused_addr();
    let transport = T::transport();

    let error = transport
        .send(get(&format!("http://{addr}/")), QUICK)
        .await
        .err()
        .expect("nothing listens there");

    assert_eq!(error.kind, TransportErrorKind::Connect, "{error}");
}

pub async fn a_body_that_stalls_is_a_timeout<T: TransportUnderTest>() {
    let server = ScriptedHttpServer::start([Reply::new(200).stall_after("{\"par", 100)]);
    let transport = T::transport();

    let mut response = transport
        .send(get(&server.url("/slow")), QUICK)
        .await
        .unwrap();
    let error = read_body(&mut response).await.unwrap_err();

    assert_eq!(error.kind, TransportErrorKind::Timeout, "{error}");
}

pub async fn a_head_that_never_comes_is_a_timeout<T: TransportUnderTest>() {
    // A listener that never accepts: the kernel completes the handshake and queues the
    // connection, the request is written, and no byte ever comes back.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let transport = T::transport();

    let error = transport
        .send(get(&format!("http://{addr}/")), QUICK)
        .await
        .err()
        .expect("no head ever arrives");

    assert_eq!(error.kind, TransportErrorKind::Timeout, "{error}");
    drop(listener);
}

pub async fn a_connection_cut_mid_body_is_an_io_error<T: TransportUnderTest>() {
    let server = ScriptedHttpServer::start([Reply::new(200).cut_after("{\"partial", 1000)]);
    let transport = T::transport();

    let mut response = transport
        .send(get(&server.url("/cut")), Timeouts::default())
        .await
        .unwrap();
    let error = read_body(&mut response).await.unwrap_err();

    assert_eq!(error.kind, TransportErrorKind::Io, "{error}");
}

pub async fn tls_to_a_server_that_does_not_speak_it_is_a_tls_error<T: TransportUnderTest>() {
    // Also proves the explicit crypto provider is used: no provider is installed
    // process-wide in this test binary.
    let server = ScriptedHttpServer::start([]);
    let transport = T::transport();

    let error = transport
        .send(get(&format!("https://{}/", server.addr())), QUICK)
        .await
        .err()
        .expect("the server answers the ClientHello with plain HTTP");

    assert_eq!(error.kind, TransportErrorKind::Tls, "{error}");
}

pub async fn sequential_requests_reuse_one_connection<T: TransportUnderTest>() {
    let server = ScriptedHttpServer::start([
        Reply::new(200).body("first"),
        Reply::new(200).body("second"),
    ]);
    let transport = T::transport();

    for expected in ["first", "second"] {
        let mut response = transport
            .send(get(&server.url("/")), Timeouts::default())
            .await
            .unwrap();
        assert_eq!(read_body(&mut response).await.unwrap(), expected.as_bytes());
        // hyper hands a finished connection back to the pool from its connection task, on
        // another executor thread; a request issued in the same instant may race it and
        // open a second connection. Give that hand-back a moment, as real callers do.
        let runtime = T::runtime();
        runtime
            .sleep_until(runtime.now() + Duration::from_millis(50))
            .await;
    }

    assert_eq!(server.accepted_connections(), 1);
    assert_eq!(server.requests()[1].connection, 0);
}

pub async fn a_cross_origin_redirect_leaves_the_api_key_behind<T: TransportUnderTest>() {
    // Two loopback servers on different ports are two origins.
    let elsewhere = ScriptedHttpServer::start([Reply::new(200).body("landed")]);
    let origin = ScriptedHttpServer::start([
        Reply::new(302).header("location", &elsewhere.url("/landing?sig=abc"))
    ]);
    let transport = T::transport();

    let mut response = transport
        .send(
            post_with_credentials(&origin.url("/api/v1/archive")),
            Timeouts::default(),
        )
        .await
        .unwrap();

    assert_eq!(response.head.status, 200);
    assert_eq!(read_body(&mut response).await.unwrap(), b"landed");
    assert_eq!(origin.requests()[0].header("x-api-key"), Some("tml-secret"));
    let landed = &elsewhere.requests()[0];
    assert_eq!(
        (landed.method.as_str(), landed.target.as_str()),
        ("GET", "/landing?sig=abc"),
        "a 302 turns the POST into a GET"
    );
    assert_eq!(
        landed.header("x-api-key"),
        None,
        "the API key followed the redirect"
    );
    assert_eq!(landed.header("authorization"), None);
    assert_eq!(landed.header("content-type"), None);
    assert!(landed.body.is_empty());
    assert_eq!(landed.header("idempotency-key"), Some("k-1"));
}

pub async fn a_same_origin_307_resends_the_post_with_its_key_and_body<T: TransportUnderTest>() {
    let server = ScriptedHttpServer::start([
        Reply::new(307).header("location", "/api/v1/moved"),
        Reply::new(200).body("{}"),
    ]);
    let transport = T::transport();

    let mut response = transport
        .send(
            post_with_credentials(&server.url("/api/v1/create")),
            Timeouts::default(),
        )
        .await
        .unwrap();

    assert_eq!(response.head.status, 200);
    read_body(&mut response).await.unwrap();
    let resent = &server.requests()[1];
    assert_eq!(
        (resent.method.as_str(), resent.target.as_str()),
        ("POST", "/api/v1/moved")
    );
    assert_eq!(resent.header("x-api-key"), Some("tml-secret"));
    assert_eq!(resent.header("authorization"), Some("Bearer jwt"));
    assert_eq!(resent.header("content-type"), Some("application/json"));
    assert_eq!(resent.body, POST_BODY);
}

/// The checkpoint-archive endpoint's 302 is its answer: the transport reads the signed URL
/// instead of downloading the archive as if it were the JSON reply.
pub async fn the_archive_endpoints_302_is_read_as_its_signed_url_not_followed<
    T: TransportUnderTest,
>() {
    let server = ScriptedHttpServer::start([Reply::new(302)
        .header("location", "https://store.example/a.tar?sig=abc")
        .header("expires", "Thu, 01 Jan 2026 00:15:00 GMT")]);
    let transport = T::transport();
    let archive = "/api/v1/training_runs/run-1/checkpoints/weights/final/archive";

    let mut response = transport
        .send(get(&server.url(archive)), Timeouts::default())
        .await
        .unwrap();

    assert_eq!(response.head.status, 200);
    assert_eq!(response.head.headers["content-type"], "application/json");
    let reply: serde_json::Value =
        serde_json::from_slice(&read_body(&mut response).await.unwrap()).unwrap();
    assert_eq!(reply["url"], "https://store.example/a.tar?sig=abc");
    assert_eq!(reply["expires"], "2026-01-01T00:15:00Z");
    assert_eq!(
        server.requests().len(),
        1,
        "the signed URL was not followed"
    );
}

pub async fn more_than_ten_redirects_is_a_protocol_error<T: TransportUnderTest>() {
    let server =
        ScriptedHttpServer::start((0..12).map(|_| Reply::new(307).header("location", "/loop")));
    let transport = T::transport();

    let error = transport
        .send(get(&server.url("/loop")), Timeouts::default())
        .await
        .err()
        .expect("the chain never ends");

    assert_eq!(error.kind, TransportErrorKind::Protocol, "{error}");
    assert!(error.message.contains("more than 10 redirects"), "{error}");
    assert_eq!(
        server.requests().len(),
        11,
        "the request and 10 followed hops"
    );
}

/// The runtime's clock reaches a deadline it slept until, and a spawned task runs to its end.
pub async fn the_runtime_sleeps_until_a_deadline_and_spawns_tasks<T: TransportUnderTest>() {
    let runtime = T::runtime();
    let deadline = runtime.now() + Duration::from_millis(20);
    runtime.sleep_until(deadline).await;
    assert!(runtime.now() >= deadline);

    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    runtime.spawn(Box::pin(async move {
        flag.store(true, Ordering::SeqCst);
    }));
    // The spawned task runs on its own; poll for it with the runtime's own sleeps (bounded).
    for _ in 0..400 {
        if ran.load(Ordering::SeqCst) {
            break;
        }
        runtime
            .sleep_until(runtime.now() + Duration::from_millis(5))
            .await;
    }
    assert!(ran.load(Ordering::SeqCst), "the spawned task ran");
}

/// Instantiates every transport scenario for a runtime: one `#[test]` each, run by `$block_on`.
///
/// ```ignore
/// tinker_testkit::transport_suite!(Tokio, block_on);
/// ```
#[macro_export]
macro_rules! transport_suite {
    ($runtime:ty, $block_on:expr) => {
        $crate::transport_suite!(@tests $runtime, $block_on;
            a_404_is_a_response_with_its_body,
            a_post_arrives_with_its_headers_and_body_intact,
            a_body_sent_in_delayed_chunks_arrives_in_order,
            a_refused_connection_is_a_connect_error,
            a_body_that_stalls_is_a_timeout,
            a_head_that_never_comes_is_a_timeout,
            a_connection_cut_mid_body_is_an_io_error,
            tls_to_a_server_that_does_not_speak_it_is_a_tls_error,
            sequential_requests_reuse_one_connection,
            a_cross_origin_redirect_leaves_the_api_key_behind,
            a_same_origin_307_resends_the_post_with_its_key_and_body,
            the_archive_endpoints_302_is_read_as_its_signed_url_not_followed,
            more_than_ten_redirects_is_a_protocol_error,
            the_runtime_sleeps_until_a_deadline_and_spawns_tasks,
        );
    };
    (@tests $runtime:ty, $block_on:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let run = $block_on;
                run($crate::transport_scenarios::$name::<$runtime>());
            }
        )*
    };
}
