//! Streaming stories: a sample streamed token by token over server-sent events.

use std::time::Duration;

use futures_util::StreamExt as _;
use tinker_core::ops::SampleStreamChunkKind;
use tinker_core::types::{FinishReason, ModelInput, SamplingParams, StopCondition};

use super::data::BASE_MODEL;
use super::{Env, Runtime};
use crate::server::LocalServerConfig;

/// A streamed sample yields, one event per token, exactly the tokens (and logprobs) the ordinary
/// `sample` returns for the same prompt and seed, then a `done` event naming the stop reason and
/// the count. A stream dropped after two tokens is cut short on the server: the recording shows
/// it sent fewer bytes than a complete stream of a quarter of its length.
pub async fn sample_stream_matches_sample<R: Runtime>() {
    let env = Env::<R>::new(LocalServerConfig::default());
    let service = env.connect();
    let sampler = service
        .create_base_model_sampling_client(BASE_MODEL)
        .await
        .expect("sampling client");
    let prompt = ModelInput::from_tokens(vec![10, 11, 12]);
    let params = |max_tokens: u32| SamplingParams {
        max_tokens: Some(max_tokens),
        seed: Some(42),
        // No stop token: the length is exactly `max_tokens`.
        stop: Some(StopCondition::Tokens(Vec::new())),
        ..SamplingParams::default()
    };

    let whole = sampler
        .sample(prompt.clone(), 1, params(48))
        .await
        .expect("sample");
    let expected = &whole.sequences[0];
    assert_eq!(expected.tokens.len(), 48);

    let mut stream = sampler
        .sample_stream(prompt.clone(), params(48))
        .await
        .expect("the stream opens");
    let mut tokens = Vec::new();
    let mut done = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("a stream chunk");
        match chunk.kind {
            SampleStreamChunkKind::Token => {
                assert_eq!(chunk.index, Some(tokens.len() as u32));
                let lp = chunk.logprob.expect("each token has its logprob");
                if let Some(want) = expected.logprobs.as_ref().and_then(|l| l.get(tokens.len())) {
                    assert!((lp - want).abs() < 1e-4, "logprob {lp} vs {want}");
                }
                tokens.push(chunk.token_id.expect("each token has its id"));
            }
            SampleStreamChunkKind::Done => done = Some(chunk),
            SampleStreamChunkKind::Error => panic!("the server failed mid-stream: {chunk:?}"),
        }
    }
    assert_eq!(tokens, expected.tokens, "{}: streamed vs sampled", R::NAME);
    let done = done.expect("the stream ends with a done event");
    assert_eq!(done.total_tokens, Some(48));
    assert_eq!(done.finish_reason.as_deref(), Some("length"));

    // Cancellation: 192 tokens requested, two read, then the stream is dropped.
    let mut long = sampler
        .sample_stream(prompt, params(192))
        .await
        .expect("the long stream opens");
    for _ in 0..2 {
        let chunk = long.next().await.expect("a chunk").expect("a token");
        assert_eq!(chunk.kind, SampleStreamChunkKind::Token);
    }
    drop(long);
    // The server records a stream when its body is dropped; wait for that (bounded).
    let mut lengths = Vec::new();
    for _ in 0..200 {
        lengths = env
            .server()
            .recording()
            .iter()
            .filter(|e| e.endpoint() == "stream_sample")
            .map(|e| e.resp_body_len)
            .collect();
        if lengths.len() == 2 {
            break;
        }
        R::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(lengths.len(), 2, "{}: both streams recorded", R::NAME);
    let (complete, cancelled) = (lengths[0], lengths[1]);
    assert!(
        cancelled < complete,
        "{}: the dropped stream of 192 tokens sent {cancelled} bytes, the complete one of 48 sent {complete}",
        R::NAME
    );
    service.close(FinishReason::Success).await.expect("close");
}
