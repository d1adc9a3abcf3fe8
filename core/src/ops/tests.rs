//! Operation scenarios on virtual time.

use std::time::Instant;

use super::{ForwardBackwardArgs, ForwardBackwardOp, SampleOp};
use crate::call::{CallOptions, DetachedSubmission, Machine};
use crate::error::ErrorKind;
use crate::ledger::Ledger;
use crate::sim::{run_all, run_one, FaultConfig, FaultyServer, Reply, Scripted, Sim, VirtualClock};
use crate::types::{
    AdamParams, Datum, LossFn, ModelInput, SampleRequest, SamplingParams, StepParams, TensorData,
};

#[allow(clippy::disallowed_methods)]
fn clock() -> VirtualClock {
    VirtualClock::new(Instant::now())
}

fn batch(n: usize) -> Vec<Datum> {
    (0..n)
        .map(|i| {
            Datum::new(ModelInput::from_tokens(vec![i as i32 + 1; 4]))
                .with_input("target_tokens", TensorData::from_i64(vec![2; 4]))
                .with_input("weights", TensorData::from_f32(vec![1.0; 4]))
        })
        .collect()
}

fn args(model: &str, data: Vec<Datum>) -> ForwardBackwardArgs {
    ForwardBackwardArgs {
        model_id: model.into(),
        data,
        loss_fn: LossFn::CrossEntropy,
        loss_fn_config: None,
        forward_only: false,
    }
}

fn sample_result(tokens: &[i32]) -> bytes::Bytes {
    use prost::Message;
    let seq = |t: i32| crate::proto::wire::SampledSequence {
        stop_reason: 1,
        tokens: bytes::Bytes::from(t.to_le_bytes().to_vec()),
        logprobs: None,
        topk_sampled_logprobs: None,
    };
    let out = crate::proto::wire::SampleResponse {
        sequences: tokens.iter().map(|t| seq(*t)).collect(),
        ..Default::default()
    };
    bytes::Bytes::from(out.encode_to_vec())
}

#[test]
fn an_expired_sample_is_resubmitted_with_a_new_seq_id_and_sequence_ids_are_copied() {
    let mut ledger = Sim::ledger(1);
    let sampler = ledger.register_sampler(0);
    let mut request = SampleRequest::new(
        "s:sample:0",
        0,
        ModelInput::from_tokens(vec![1, 2, 3]),
        SamplingParams::default(),
    );
    request.num_samples = 2;
    let op = SampleOp::new(&mut ledger, sampler, request, true, CallOptions::default()).unwrap();
    let mut server = Scripted::new([
        Reply::json(
            200,
            r#"{"request_id":"req-1","sample_sequence_ids":["a","b"]}"#,
        ),
        Reply::json(410, r#"{"detail":"expired"}"#),
        Reply::json(
            200,
            r#"{"request_id":"req-2","sample_sequence_ids":["c","d"]}"#,
        ),
        Reply::protobuf(sample_result(&[11, 12])),
    ]);
    let clock = clock();
    let (result, trace) = run_one(op, &mut ledger, &mut server, &clock);
    let response = result.expect("the resubmitted sample succeeds");
    assert!(trace[0].contains(r#""seq_id":0"#), "{trace:#?}");
    assert!(
        trace[2].contains("/asample") && trace[2].contains(r#""seq_id":1"#),
        "{trace:#?}"
    );
    let ids: Vec<_> = response
        .sequences
        .iter()
        .map(|s| s.sequence_id.clone())
        .collect();
    assert_eq!(ids, [Some("c".to_owned()), Some("d".to_owned())]);
    assert_eq!(response.sequences[1].tokens, [12]);
    // Layer R waited 0.5 s ± 25 % before resubmitting.
    let ms = clock.elapsed().as_millis();
    assert!((375..=625).contains(&ms), "{ms} ms");
    assert!(ledger.is_quiescent());
}

#[test]
fn a_failed_future_is_not_retried_by_layer_r() {
    let mut ledger = Sim::ledger(1);
    let sampler = ledger.register_sampler(3 * crate::ledger::CLONE_SEQ_BLOCK);
    let request = SampleRequest::new(
        "s:sample:0",
        0,
        ModelInput::from_tokens(vec![1]),
        SamplingParams::default(),
    );
    let op = SampleOp::new(&mut ledger, sampler, request, true, CallOptions::default()).unwrap();
    let mut server = Scripted::new([
        Reply::json(200, r#"{"request_id":"req-1"}"#),
        Reply::json(200, r#"{"error":"prompt too long","category":"user"}"#),
    ]);
    let (result, trace) = run_one(op, &mut ledger, &mut server, &clock());
    assert_eq!(result.unwrap_err().kind(), ErrorKind::RequestFailed);
    assert_eq!(trace.len(), 2);
    // A clone's seq ids live in their own block of 10⁹.
    assert!(trace[0].contains(r#""seq_id":3000000000"#), "{trace:#?}");
}

#[test]
fn invalid_datums_are_rejected_before_anything_is_reserved_or_sent() {
    let mut ledger = Sim::ledger(1);
    let mut data = batch(3);
    data[2] = data[2]
        .clone()
        .with_input("weights", TensorData::from_f32(vec![1.0; 3]));
    let err =
        ForwardBackwardOp::new(&mut ledger, args("m", data), CallOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("data[2]"), "{err}");
    assert_eq!(ledger.turns().next_seq_id("m"), 1);
    let empty = ForwardBackwardOp::new(&mut ledger, args("m", vec![]), CallOptions::default());
    assert!(empty.unwrap_err().to_string().contains("No data provided"));
}

#[test]
fn a_forward_backward_cancelled_before_it_was_sent_takes_no_seq_id() {
    let mut ledger = Sim::ledger(1);
    let clock = clock();
    let mut dropped =
        ForwardBackwardOp::new(&mut ledger, args("m", batch(5)), CallOptions::default()).unwrap();
    let params = StepParams::Adam(AdamParams::with_learning_rate(1e-4));
    let step = super::optim_step(&mut ledger, "m", params, CallOptions::default()).unwrap();
    // Made first, so the step waits for it; but its caller gives up before anything is sent.
    assert_eq!(dropped.seq_ids(), [None, None, None]);
    dropped.cancel(&mut ledger, clock.now());
    assert!(!ledger.has_detached_calls());
    let mut server = FaultyServer::new(2, FaultConfig::none());
    let (result, trace) = run_one(step, &mut ledger, &mut server, &clock);
    assert!(result.is_ok());
    // The step takes seq 1: no hole for the server to wait out.
    assert!(trace[0].contains(r#""seq_id":1"#), "{trace:#?}");
    assert!(ledger.is_quiescent());
}

#[test]
fn a_forward_backward_cancelled_mid_turn_still_sends_every_chunk_in_the_background() {
    let mut ledger = Sim::ledger(1);
    let clock = clock();
    let mut first =
        ForwardBackwardOp::new(&mut ledger, args("m", batch(5)), CallOptions::default()).unwrap();
    let second =
        ForwardBackwardOp::new(&mut ledger, args("m", batch(3)), CallOptions::default()).unwrap();
    assert_eq!(first.chunk_count(), 3);
    // The first call gets as far as handing out chunks 2 and 3 (seq 2 and 3: the turn started
    // and took ids 1..=3), then its caller gives up with both POSTs in flight.
    let mut sent = 0;
    while let crate::call::Output::Transmit(_) = first.poll_output(&mut ledger, clock.now()) {
        sent += 1;
    }
    assert_eq!(sent, 2, "chunk 1 waits for chunks 2 and 3");
    assert_eq!(first.seq_ids(), [None, Some(2), Some(3)]);
    first.cancel(&mut ledger, clock.now());
    // Its three unsent chunks are handed over, with the seq ids they carry (chunk 1's comes
    // from its turn once it is sent).
    let detached: Vec<_> = ledger
        .take_detached_calls()
        .into_iter()
        .map(DetachedSubmission)
        .collect();
    assert_eq!(
        detached
            .iter()
            .map(DetachedSubmission::seq_id)
            .collect::<Vec<_>>(),
        [None, Some(2), Some(3)]
    );
    let mut server = FaultyServer::new(2, FaultConfig::none());
    let (results, _) = run_all(detached, &mut ledger, &mut server, &clock);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let (result, trace) = run_one(second, &mut ledger, &mut server, &clock);
    assert_eq!(result.unwrap().loss_fn_outputs.len(), 3);
    let seqs: Vec<u64> = server.accepted().iter().map(|(_, s)| *s).collect();
    // Turn order within each call, and ids 1..=5 without a hole.
    assert_eq!(seqs[2], 1, "chunk 1 of the abandoned call last: {seqs:?}");
    assert_eq!(&seqs[3..], [5, 4], "{trace:#?}");
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 2, 3, 4, 5]);
    assert!(ledger.is_quiescent());
}

#[test]
fn a_training_call_past_its_deadline_mid_turn_still_sends_its_chunks() {
    let mut ledger = Sim::ledger(1);
    let clock = clock();
    let deadline = clock.now() + std::time::Duration::from_secs(1);
    let mut op = ForwardBackwardOp::new(
        &mut ledger,
        args("m", batch(5)),
        CallOptions::default().with_deadline(Some(deadline)),
    )
    .unwrap();
    while let crate::call::Output::Transmit(_) = op.poll_output(&mut ledger, clock.now()) {}
    clock.advance_to(deadline);
    let crate::call::Output::Done(Err(e)) = op.poll_output(&mut ledger, clock.now()) else {
        panic!("the deadline ends the call")
    };
    assert_eq!(e.kind(), ErrorKind::Timeout);
    let detached: Vec<_> = ledger
        .take_detached_calls()
        .into_iter()
        .map(DetachedSubmission)
        .collect();
    assert_eq!(
        detached.len(),
        3,
        "every chunk of the started turn is still sent"
    );
    let mut server = FaultyServer::new(2, FaultConfig::none());
    let (results, _) = run_all(detached, &mut ledger, &mut server, &clock);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let seqs: Vec<u64> = server.accepted().iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, [2, 3, 1]);
    assert!(ledger.is_quiescent());
}

#[test]
fn compressed_chunks_travel_as_zstd_and_sequential_mode_keeps_seq_order() {
    let mut ledger = Sim::ledger(1);
    let mut config = ledger.client_config().clone();
    config.proto_compress_fwdbwd = true;
    config.parallel_fwdbwd_chunks = false;
    ledger.set_client_config(config);
    let op =
        ForwardBackwardOp::new(&mut ledger, args("m", batch(5)), CallOptions::default()).unwrap();
    let mut server = FaultyServer::new(2, FaultConfig::none());
    let (result, _) = run_one(op, &mut ledger, &mut server, &clock());
    let out = result.unwrap();
    assert_eq!(out.loss_fn_outputs.len(), 5);
    assert_eq!(out.loss(), Some(5.0));
    let seqs: Vec<u64> = server.accepted().iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn custom_loss_reserves_two_turns_so_the_next_request_follows_the_backward_pass() {
    let mut ledger = Sim::ledger(1);
    let data = batch(5);
    let (chunks, forward, backward) =
        ForwardBackwardOp::reserve_custom(&mut ledger, "m", &data).unwrap();
    assert_eq!(chunks.len(), 3);
    assert_eq!(backward.turn, forward.turn + 1);
    let params = StepParams::Adam(AdamParams::with_learning_rate(1e-4));
    let step = super::optim_step(&mut ledger, "m", params, CallOptions::default()).unwrap();
    let forward_only = ForwardBackwardArgs {
        forward_only: true,
        ..args("m", data)
    };
    let op = ForwardBackwardOp::with_reservation(
        &mut ledger,
        forward_only,
        &chunks,
        forward,
        CallOptions::default(),
    )
    .unwrap();
    let mut server = FaultyServer::new(2, FaultConfig::none());
    let clock = clock();
    let (result, trace) = run_one(op, &mut ledger, &mut server, &clock);
    assert!(result.is_ok());
    assert!(trace.iter().all(|l| !l.contains("/optim_step")));
    // The user's loss failed: the backward pass is never sent; its turn, not started, is given
    // back without taking an id, so the step follows the forward pass directly.
    assert!(!ledger.turn_started("m", backward.turn));
    ledger.release_reservation(&backward);
    let (result, trace) = run_one(step, &mut ledger, &mut server, &clock);
    assert!(result.is_ok());
    assert!(trace[0].contains(r#""seq_id":4"#), "{trace:#?}");
    assert!(ledger.is_quiescent());
}

#[test]
fn session_counters_start_at_zero_and_are_shared_as_the_protocol_says() {
    let mut ledger: Ledger = Sim::ledger(1);
    assert_eq!(ledger.next_model_seq_id(), 0);
    assert_eq!(ledger.next_model_seq_id(), 1);
    assert_eq!(ledger.next_sampling_session_seq_id(), 0);
    assert_eq!(ledger.next_sampling_session_seq_id(), 1);
    assert_eq!(ledger.next_custom_loss_seq_id(), 0);
    let a = ledger.register_sampler(0);
    let b = ledger.register_sampler(crate::ledger::CLONE_SEQ_BLOCK);
    assert_eq!(ledger.next_sample_seq_id(a), 0);
    assert_eq!(ledger.next_sample_seq_id(a), 1);
    assert_eq!(ledger.next_sample_seq_id(b), 1_000_000_000);
}
