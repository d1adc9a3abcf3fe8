//! Server-side custom losses (protocol.md 11.4): a loss recorded with the graph builder, uploaded
//! once with `create_custom_loss`, trained with one `loss_fn = "custom"` forward_backward per
//! step — and the same definition run on the client (11.3) giving the same numbers.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tinker_core::losses::server_side::{CustomLossHandle, ServerLoss, ServerLossBuilder};
use tinker_core::types::{AdamParams, LoraConfig, TensorData};
use tinker_core::ErrorKind;

use super::data::{batch, mean_nll, BASE_MODEL};
use super::{Env, Runtime};
use crate::server::LocalServerConfig;

/// Training steps per run.
const STEPS: usize = 3;

/// The negative log-likelihood of protocol.md 11.4: `−Σ logprobs·weights` per datum.
fn neg_ll() -> ServerLoss {
    let b = ServerLossBuilder::new("neg_ll", 1).expect("a valid loss name and rank");
    let weights = b.input("weights", 1);
    let loss = -(b.logprobs() * weights).sum();
    b.build(&loss, &[("custom/neg_ll:sum", &loss)])
        .expect("the NLL graph passes the SDK's checks")
}

/// What one run observed.
struct Run {
    handle: CustomLossHandle,
    /// Mean NLL per token of each step (from `loss:sum`).
    losses: Vec<f64>,
    /// Each step's metrics.
    metrics: Vec<BTreeMap<String, f64>>,
    /// The run's training client, for the misuse checks.
    training: tinker_core::client::TrainingClient,
}

/// Creates the loss (twice: the second creation must be free), then trains `STEPS` steps on the
/// same batch with it, from a LoRA initialised with a fixed seed.
async fn train<R: Runtime>(env: &Env<R>, loss: &ServerLoss) -> Run {
    let service = env.connect();
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(8).with_seed(11))
        .await
        .expect("training client");
    let handle = service
        .create_custom_loss(loss)
        .await
        .expect("create_custom_loss");
    let again = service
        .create_custom_loss(loss)
        .await
        .expect("creating the same loss again");
    assert_eq!(again.loss_id(), handle.loss_id(), "one loss per definition");
    let data = batch(0, 8);
    let (mut losses, mut metrics) = (Vec::new(), Vec::new());
    for _ in 0..STEPS {
        let fb = training
            .forward_backward_custom_loss(data.clone(), &handle)
            .await
            .expect("forward_backward_custom_loss is submitted");
        let opt = training
            .optim_step(AdamParams::with_learning_rate(0.05))
            .await
            .expect("optim_step is submitted");
        let out = fb.result().await.expect("custom loss result");
        opt.result().await.expect("optim_step result");
        assert_eq!(out.loss_fn_outputs.len(), data.len());
        losses.push(mean_nll(out.loss(), &data));
        metrics.push(out.metrics);
    }
    Run {
        handle,
        losses,
        metrics,
        training,
    }
}

/// The NLL built with the graph builder, on two servers: one that takes uploads
/// (`custom_loss_server_side`), one that does not (the loss then runs on the client, 11.3).
/// Both start from the same weights and train on the same batch.
///
/// Observed: the server-side run sends one `create_custom_loss` (seq 0, the builder's graph),
/// then exactly one `forward_backward` per step with `loss_fn = "custom"`, the `loss_id` in
/// `loss_fn_config_v2` and the datums unchanged; its losses equal the client-side run's within
/// 1e-4 per token and fall; both report the graph's `custom/neg_ll:sum` metric as the loss.
/// A handle is refused by a client of another session, and datums lacking a declared input or
/// having it at the wrong rank are refused before anything is sent.
pub async fn server_side_custom_loss_matches_the_client_side_path<R: Runtime>() {
    let nll = neg_ll();
    let mut uploads = LocalServerConfig::default();
    uploads.client_config.custom_loss_server_side = true;
    let server_env = Env::<R>::new(uploads);
    let client_env = Env::<R>::new(LocalServerConfig::default());

    let server_side = train(&server_env, &nll).await;
    let client_side = train(&client_env, &nll).await;
    let loss_id = server_side
        .handle
        .loss_id()
        .expect("the server took the upload")
        .to_owned();
    assert_eq!(
        client_side.handle.loss_id(),
        None,
        "no upload without the flag"
    );

    for (step, (s, c)) in server_side
        .losses
        .iter()
        .zip(&client_side.losses)
        .enumerate()
    {
        assert!(
            (s - c).abs() < 1e-4,
            "{}: step {step}: server-side {s} vs client-side {c}",
            R::NAME
        );
    }
    assert!(
        server_side.losses[STEPS - 1] < server_side.losses[0] - 0.01,
        "{}: the loss falls: {:?}",
        R::NAME,
        server_side.losses
    );
    for run in [&server_side, &client_side] {
        for m in &run.metrics {
            assert_eq!(m.get("custom/neg_ll:sum"), m.get("loss:sum"), "{m:?}");
        }
    }

    // On the wire: one upload, then one custom forward_backward and one optim_step per step.
    let recording = server_env.server().recording();
    let calls: Vec<&crate::server::Exchange> = recording
        .iter()
        .filter(|e| {
            matches!(
                e.endpoint(),
                "create_custom_loss" | "forward_backward" | "optim_step"
            )
        })
        .collect();
    let endpoints: Vec<&str> = calls.iter().map(|e| e.endpoint()).collect();
    let mut expected = vec!["create_custom_loss"];
    expected.extend(["forward_backward", "optim_step"].repeat(STEPS));
    assert_eq!(endpoints, expected, "{}", R::NAME);
    let upload = calls[0].body.as_ref().expect("a JSON body");
    assert_eq!(upload["custom_loss_seq_id"], json!(0));
    assert_eq!(upload["name"], json!("neg_ll"));
    assert_eq!(
        upload["graph"],
        serde_json::to_value(nll.graph()).expect("the graph encodes")
    );
    let data = batch(0, 8);
    for fb in calls.iter().filter(|e| e.endpoint() == "forward_backward") {
        let body = fb.body_proto.as_ref().expect("a decoded protobuf body");
        assert_eq!(body["loss_fn"], json!("custom"));
        assert_eq!(
            body["loss_fn_config_v2"],
            json!({"loss_id": {"text": loss_id}})
        );
        assert_eq!(body.get("forward_only"), None::<&Value>);
        let sent = body["data"].as_array().expect("datums");
        assert_eq!(sent.len(), data.len());
        for d in sent {
            let keys: Vec<&str> = d["loss_fn_inputs"]
                .as_object()
                .expect("loss_fn_inputs")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, ["target_tokens", "weights"], "datums go unchanged");
        }
    }
    // The client-side run sent no upload and two passes per step.
    let client_calls: Vec<String> = client_env
        .server()
        .recording()
        .iter()
        .filter(|e| e.endpoint() != "retrieve_future")
        .map(|e| e.endpoint().to_owned())
        .collect();
    assert!(!client_calls.iter().any(|e| e == "create_custom_loss"));
    assert_eq!(
        client_calls
            .iter()
            .filter(|e| *e == "forward_backward")
            .count(),
        2 * STEPS
    );

    // Misuse is refused before anything is sent.
    // Another seed: the same seed would repeat the first client's idempotency keys, and the
    // server would answer create_session with the first session again.
    let other_session = server_env
        .connect_with(tinker_core::client::ClientOptions::default().with_seed(8))
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(8))
        .await
        .expect("a training client in a second session");
    // (Heartbeats and telemetry may arrive meanwhile; training requests must not.)
    let forward_backwards = || {
        server_env
            .server()
            .recording()
            .iter()
            .filter(|e| e.endpoint() == "forward_backward")
            .count()
    };
    let before = forward_backwards();
    let foreign = other_session
        .forward_backward_custom_loss(data.clone(), &server_side.handle)
        .await
        .expect_err("a handle of another session");
    assert_eq!(foreign.kind(), ErrorKind::InvalidInput, "{foreign}");
    let mut no_weights = data[0].clone();
    no_weights.loss_fn_inputs.remove("weights");
    let missing = server_side
        .training
        .forward_backward_custom_loss(vec![data[1].clone(), no_weights], &server_side.handle)
        .await
        .expect_err("a datum without the declared input");
    assert!(
        missing
            .to_string()
            .contains("data[1].loss_fn_inputs.weights"),
        "{missing}"
    );
    let mut matrix = data[0].clone();
    matrix.loss_fn_inputs.insert(
        "weights".into(),
        TensorData::from_f32(vec![1.0; 16])
            .with_shape(vec![4, 4])
            .expect("a 4×4 tensor"),
    );
    let rank = server_side
        .training
        .forward_backward_custom_loss(vec![matrix], &server_side.handle)
        .await
        .expect_err("weights of rank 2");
    assert!(rank.to_string().contains("rank 2"), "{rank}");
    assert_eq!(forward_backwards(), before, "nothing was sent");
}
