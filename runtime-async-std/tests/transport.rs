//! The hyper transport and the async-std runtime against the scripted loopback server: the
//! shared transport suite ([`tinker_testkit::transport_scenarios`]) run twice, under
//! `smol::block_on` (checking that no tokio runtime exists, so any accidental use of a tokio
//! reactor would panic) and under `async_std::task::block_on`, plus what is particular to hyper.

use std::sync::Arc;

use bytes::Bytes;
use tinker_async_std::{AsyncStdRuntime, HyperTransport};
use tinker_core::io::{AsyncHttp, AsyncRuntime, Timeouts};
use tinker_testkit::scripted_http::{Reply, ScriptedHttpServer};
use tinker_testkit::transport_scenarios::TransportUnderTest;

struct Hyper;

impl TransportUnderTest for Hyper {
    fn transport() -> Box<dyn AsyncHttp> {
        Box::new(HyperTransport::new())
    }
    fn runtime() -> Arc<dyn AsyncRuntime> {
        Arc::new(AsyncStdRuntime)
    }
}

fn smol_without_tokio<F: std::future::Future>(future: F) -> F::Output {
    smol::block_on(async {
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "no tokio runtime may be running"
        );
        future.await
    })
}

mod under_smol {
    use super::{smol_without_tokio, Hyper};
    tinker_testkit::transport_suite!(Hyper, smol_without_tokio);
}

mod under_async_std {
    use super::Hyper;
    tinker_testkit::transport_suite!(Hyper, async_std::task::block_on);
}

async fn the_transport_asks_for_an_uncompressed_body() {
    let server = ScriptedHttpServer::start([Reply::new(200).body("{}")]);
    let transport = HyperTransport::new();
    let request = http::Request::get(server.url("/poll"))
        .header("accept-encoding", "gzip, deflate, zstd")
        .body(Bytes::new())
        .unwrap();

    transport.send(request, Timeouts::default()).await.unwrap();

    assert_eq!(
        server.requests()[0].header("accept-encoding"),
        Some(tinker_async_std::ACCEPT_ENCODING)
    );
}

#[test]
fn the_transport_asks_for_an_uncompressed_body_under_smol() {
    smol_without_tokio(the_transport_asks_for_an_uncompressed_body());
}
