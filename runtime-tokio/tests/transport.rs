//! The reqwest transport and the tokio runtime against the scripted loopback server: the shared
//! transport suite ([`tinker_testkit::transport_scenarios`]) on a tokio runtime, plus what is
//! particular to reqwest and tokio.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tinker_core::io::{AsyncHttp, AsyncRuntime, Timeouts};
use tinker_testkit::scripted_http::{Reply, ScriptedHttpServer};
use tinker_testkit::transport_scenarios::{read_body, TransportUnderTest};
use tinker_tokio::{ReqwestTransport, TokioRuntime};

struct Reqwest;

impl TransportUnderTest for Reqwest {
    fn transport() -> Box<dyn AsyncHttp> {
        Box::new(ReqwestTransport::new())
    }
    fn runtime() -> Arc<dyn AsyncRuntime> {
        Arc::new(TokioRuntime::current())
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

tinker_testkit::transport_suite!(Reqwest, block_on);

#[tokio::test]
async fn the_transport_advertises_only_the_encodings_it_decodes_and_decodes_them() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{\"type\":\"try_again\"}").unwrap();
    let server = ScriptedHttpServer::start([Reply::new(200)
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())]);
    let transport = ReqwestTransport::new();
    let request = http::Request::get(server.url("/poll"))
        .header("accept-encoding", "br")
        .body(Bytes::new())
        .unwrap();

    let mut response = transport.send(request, Timeouts::default()).await.unwrap();

    assert_eq!(
        server.requests()[0].header("accept-encoding"),
        Some(tinker_tokio::ACCEPT_ENCODING)
    );
    assert!(response.head.headers.get("content-encoding").is_none());
    assert_eq!(
        read_body(&mut response).await.unwrap(),
        b"{\"type\":\"try_again\"}"
    );
}

#[test]
fn a_runtime_from_a_handle_spawns_from_outside_the_runtime() {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let runtime = TokioRuntime::from_handle(tokio.handle().clone());
    let (done_tx, done_rx) = std::sync::mpsc::channel();

    runtime.spawn(Box::pin(async move {
        done_tx.send("ran").unwrap();
    }));

    assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok("ran"));
}
