//! OpenTelemetry trace propagation (Tinkex F26, `otel` feature): requests a user's code makes
//! inside a traced span reach the server with a W3C `traceparent` of that span's trace.

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tinker_core::client::{ClientOptions, TRACEPARENT};
use tinker_core::settings::Settings;
use tinker_core::types::{FinishReason, LoraConfig, LossFn};
use tinker_testkit::scenarios::{batch, BASE_MODEL};
use tinker_testkit::{LocalServer, LocalServerConfig};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// The trace id field of a `traceparent` value (`00-<trace id>-<span id>-<flags>`).
fn trace_id_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_made_inside_a_span_carry_its_trace_id() {
    // The application's side: an OpenTelemetry tracer behind `tracing`, and the W3C propagator.
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tinker-test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let server = LocalServer::start(LocalServerConfig::default())
        .await
        .unwrap();
    let settings = Settings::default()
        .with_base_url(server.url())
        .with_api_key(server.api_key())
        .unwrap();
    let service =
        tinker_tokio::connect_with(settings, ClientOptions::default().with_seed(5)).unwrap();

    let job = tracing::info_span!("fine_tune_job");
    let trace_id = job.context().span().span_context().trace_id().to_string();
    assert_ne!(
        trace_id, "00000000000000000000000000000000",
        "the span is traced"
    );
    async {
        let training = service
            .create_lora_training_client(BASE_MODEL, LoraConfig::new(8))
            .await
            .unwrap();
        training
            .forward_backward(batch(0, 4), LossFn::CrossEntropy)
            .await
            .unwrap()
            .result()
            .await
            .unwrap();
    }
    .instrument(job)
    .await;

    let recording = server.recording();
    let user_requests: Vec<_> = recording
        .iter()
        .filter(|e| {
            matches!(
                e.endpoint(),
                "create_session"
                    | "create_model"
                    | "get_info"
                    | "forward_backward"
                    | "retrieve_future"
            )
        })
        .collect();
    assert!(user_requests.len() >= 5, "{}", user_requests.len());
    for e in &user_requests {
        let traceparent = e
            .header(TRACEPARENT)
            .unwrap_or_else(|| panic!("{} has no traceparent", e.path));
        assert_eq!(
            trace_id_of(traceparent),
            trace_id,
            "{}: {traceparent}",
            e.path
        );
        assert!(
            traceparent.starts_with("00-") && traceparent.len() == 55,
            "{traceparent}"
        );
    }
    // Each call is its own child span of the job: the parent span ids differ between calls.
    let parents: std::collections::HashSet<_> = user_requests
        .iter()
        .filter_map(|e| e.header(TRACEPARENT)?.split('-').nth(2))
        .collect();
    assert!(parents.len() > 1, "{parents:?}");

    service.close(FinishReason::Success).await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_injector_no_trace_context_is_sent() {
    let server = LocalServer::start(LocalServerConfig::default())
        .await
        .unwrap();
    let settings = Settings::default()
        .with_base_url(server.url())
        .with_api_key(server.api_key())
        .unwrap();
    let options = ClientOptions::default()
        .with_seed(5)
        .without_header_injector();
    let service = tinker_tokio::connect_with(settings, options).unwrap();
    service
        .get_server_capabilities()
        .instrument(tracing::info_span!("probe"))
        .await
        .unwrap();
    let recording = server.recording();
    assert!(!recording.is_empty());
    assert!(recording.iter().all(|e| e.header(TRACEPARENT).is_none()));
    server.shutdown().await;
}
