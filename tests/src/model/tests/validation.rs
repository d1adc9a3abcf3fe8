//! Bad requests are user-category errors that name the datum and key, and a rejected
//! forward_backward accumulates nothing.

use tinker_core::types::{Datum, ModelInput, TensorData};

use super::super::{LossConfig, ModelSpec, ToyModel};
use super::{f32s, rl, sft, small_model};

fn expect_user_error(
    model: &mut ToyModel,
    data: &[Datum],
    loss: &str,
    config: &LossConfig,
    needle: &str,
) {
    let before = (model.grad_norm(), model.pending_backwards());
    let err = model.forward_backward(data, loss, config).unwrap_err();
    assert!(err.is_user(), "{err}");
    assert!(
        err.message.contains(needle),
        "expected `{needle}` in: {err}"
    );
    assert_eq!(
        (model.grad_norm(), model.pending_backwards()),
        before,
        "nothing accumulated"
    );
}

#[test]
fn unknown_losses_and_configs_are_rejected() {
    let mut m = small_model();
    let d = [sft(&[1, 2], &[2, 3], &[1.0, 1.0])];
    let none = LossConfig::default();
    expect_user_error(&mut m, &d, "mse", &none, "unknown loss_fn `mse`");
    expect_user_error(
        &mut m,
        &d,
        "custom",
        &LossConfig::default().with_text("loss_id", "abc"),
        "loss_id abc",
    );
    expect_user_error(
        &mut m,
        &d,
        "cross_entropy",
        &LossConfig::default().with_number("beta", 0.1),
        "loss_fn_config.beta",
    );
    let rl_datum = [rl(
        ModelInput::from_tokens(vec![1, 2]),
        &[2, 3],
        &[-1.0, -1.0],
        &[1.0, 1.0],
    )];
    expect_user_error(
        &mut m,
        &rl_datum,
        "ppo",
        &LossConfig::default()
            .with_number("clip_low_threshold", 1.5)
            .with_number("clip_high_threshold", 1.2),
        "greater than",
    );
    expect_user_error(
        &mut m,
        &rl_datum,
        "dro",
        &LossConfig::default().with_number("beta", -1.0),
        "beta",
    );
    expect_user_error(
        &mut m,
        &rl_datum,
        "ppo",
        &LossConfig::default().with_text("clip_low_threshold", "0.8"),
        "no string settings",
    );
}

#[test]
fn missing_extra_and_mistyped_inputs_are_rejected_by_name() {
    let mut m = small_model();
    let none = LossConfig::default();
    let ok = sft(&[1, 2], &[2, 3], &[1.0, 1.0]);

    let mut no_weights = ok.clone();
    no_weights.loss_fn_inputs.remove("weights");
    expect_user_error(
        &mut m,
        &[ok.clone(), no_weights],
        "cross_entropy",
        &none,
        "data[1].loss_fn_inputs.weights: required",
    );

    let with_mask = ok.clone().with_input("mask", f32s(&[1.0, 1.0]));
    expect_user_error(
        &mut m,
        &[with_mask],
        "cross_entropy",
        &none,
        "data[0].loss_fn_inputs.mask: not an input",
    );

    let int_weights = ok
        .clone()
        .with_input("weights", TensorData::from_i64(vec![1, 1]));
    expect_user_error(
        &mut m,
        &[int_weights],
        "cross_entropy",
        &none,
        "must be float32",
    );

    let short = ok.clone().with_input("weights", f32s(&[1.0]));
    expect_user_error(
        &mut m,
        &[short],
        "cross_entropy",
        &none,
        "has 1 positions but the model input has 2",
    );

    let rl_without_advantages = Datum::new(ModelInput::from_tokens(vec![1, 2]))
        .with_input("target_tokens", TensorData::from_i64(vec![2, 3]))
        .with_input("logprobs", f32s(&[-1.0, -1.0]));
    expect_user_error(
        &mut m,
        &[rl_without_advantages],
        "importance_sampling",
        &none,
        "advantages: required",
    );

    // cross_entropy weights of the wrong width for 2-D targets.
    let two_d = Datum::new(ModelInput::from_tokens(vec![1, 2]))
        .with_input(
            "target_tokens",
            TensorData::from_i64(vec![2, 3, 4, 5])
                .with_shape(vec![2, 2])
                .unwrap(),
        )
        .with_input("weights", f32s(&[1.0, 1.0]));
    expect_user_error(
        &mut m,
        std::slice::from_ref(&two_d),
        "cross_entropy",
        &none,
        "does not match target_tokens' shape",
    );
    // RL losses take only 1-D targets.
    let mut two_d_rl = two_d;
    two_d_rl.loss_fn_inputs.remove("weights");
    two_d_rl.loss_fn_inputs.insert(
        "logprobs".into(),
        f32s(&[-1.0; 4]).with_shape(vec![2, 2]).unwrap(),
    );
    two_d_rl.loss_fn_inputs.insert(
        "advantages".into(),
        f32s(&[1.0; 4]).with_shape(vec![2, 2]).unwrap(),
    );
    expect_user_error(
        &mut m,
        &[two_d_rl],
        "ppo",
        &none,
        "is not (N,) for this loss",
    );
}

#[test]
fn token_ids_outside_the_vocabulary_are_rejected() {
    let mut m = small_model(); // V = 16
    let none = LossConfig::default();
    expect_user_error(
        &mut m,
        &[sft(&[1, 16], &[2, 3], &[1.0, 1.0])],
        "cross_entropy",
        &none,
        "model_input position 1: token id 16",
    );
    expect_user_error(
        &mut m,
        &[sft(&[1, 2], &[2, -1], &[1.0, 1.0])],
        "cross_entropy",
        &none,
        "target_tokens[1]: token id -1",
    );
}

#[test]
fn degenerate_batches_are_rejected() {
    let mut m = small_model();
    let none = LossConfig::default();
    expect_user_error(&mut m, &[], "cross_entropy", &none, "no datums");
    expect_user_error(
        &mut m,
        &[sft(&[], &[], &[])],
        "cross_entropy",
        &none,
        "empty",
    );
    // GSPO with a mask that selects nothing has no sequence ratio.
    let d = rl(
        ModelInput::from_tokens(vec![1, 2]),
        &[2, 3],
        &[-1.0, -1.0],
        &[1.0, 1.0],
    )
    .with_input("sequence_ratio_mask", f32s(&[0.0, 0.0]));
    expect_user_error(&mut m, &[d], "gspo", &none, "selects no position");
    // An astronomically off-policy ratio overflows: refused rather than poisoning the weights.
    let d = rl(
        ModelInput::from_tokens(vec![1, 2]),
        &[2, 3],
        &[-1000.0, -1.0],
        &[1.0, 1.0],
    );
    expect_user_error(&mut m, &[d], "importance_sampling", &none, "not finite");
}

#[test]
fn invalid_model_specs_are_rejected() {
    for spec in [
        ModelSpec::new("m", 4).with_vocab_size(1),
        ModelSpec::new("m", 100_000),
        ModelSpec::new("m", 4)
            .with_vocab_size(16)
            .with_eos_token(16),
    ] {
        assert!(ToyModel::new(spec).unwrap_err().is_user());
    }
}
