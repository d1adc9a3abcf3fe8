//! The losses.md §10.1 test vectors: one datum, N = 6, position 0 plays the prompt. Every loss
//! must reproduce the table's elementwise terms, loss:sum and gradient g = ∂L/∂lp, and where
//! the loss value is differentiable without stop-gradients, g must match central differences.

use super::super::{BuiltinLoss, LossConfig, LossInputs};
use super::{assert_all_close, assert_close};

const LP: [f64; 6] = [-3.0, -0.5, -0.7, -1.4, -0.2, -2.0];
const SP: [f64; 6] = [0.0, -0.5, -1.0, -1.0, -0.5, -1.5];
const A: [f64; 6] = [0.0, 1.0, 1.0, -1.0, -1.0, 1.0];
const W: [f64; 6] = [0.0, 1.0, 1.0, 1.0, 1.0, 1.0];
const M: [f64; 6] = [0.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// The table's precision (six decimals).
const TOL: f64 = 2e-6;

fn inputs() -> LossInputs {
    LossInputs {
        weights: Some(W.to_vec()),
        sampling_logprobs: Some(SP.to_vec()),
        advantages: Some(A.to_vec()),
        sequence_ratio_mask: Some(M.to_vec()),
        ..LossInputs::default()
    }
}

fn loss(name: &str, config: &[(&str, f64)]) -> BuiltinLoss {
    let mut c = LossConfig::default();
    for (k, v) in config {
        c = c.with_number(*k, *v);
    }
    BuiltinLoss::from_request(name, &c).unwrap()
}

/// Checks one table row.
fn row(loss: BuiltinLoss, elementwise: [f64; 6], loss_sum: f64, g: [f64; 6]) {
    let what = format!("{loss:?}");
    let out = loss.evaluate(&LP, &inputs()).unwrap();
    assert_all_close(
        out.elementwise.as_deref().unwrap(),
        &elementwise,
        TOL,
        &format!("{what} elementwise"),
    );
    assert_close(out.loss, loss_sum, TOL, &format!("{what} loss:sum"));
    assert_all_close(&out.grad, &g, TOL, &format!("{what} g"));
}

#[test]
fn the_ratio_row_of_the_table_is_exp_lp_minus_sp() {
    let r: Vec<f64> = LP.iter().zip(SP).map(|(lp, sp)| (lp - sp).exp()).collect();
    assert_all_close(
        &r,
        &[0.049787, 1.0, 1.349859, 0.670320, 1.349859, 0.606531],
        TOL,
        "r",
    );
}

#[test]
fn cross_entropy_matches_the_table() {
    row(
        loss("cross_entropy", &[]),
        [0.0, 0.5, 0.7, 1.4, 0.2, 2.0],
        4.8,
        [0.0, -1.0, -1.0, -1.0, -1.0, -1.0],
    );
}

#[test]
fn importance_sampling_matches_the_table() {
    let terms = [0.0, -1.0, -1.349859, 0.670320, 1.349859, -0.606531];
    row(loss("importance_sampling", &[]), terms, -0.936211, terms);
}

#[test]
fn ppo_with_default_clips_matches_the_table() {
    // The defaults are the documented 0.8 / 1.2, so no config is needed.
    row(
        loss("ppo", &[]),
        [0.0, -1.0, -1.2, 0.8, 1.349859, -0.606531],
        -0.656672,
        [0.0, -1.0, 0.0, 0.0, 1.349859, -0.606531],
    );
}

#[test]
fn cispo_matches_the_table_with_default_and_old_clips() {
    row(
        loss("cispo", &[]),
        [0.0, 0.5, 0.944901, -0.938448, -0.269972, 1.213061],
        1.449543,
        [0.0, -1.0, -1.349859, 0.670320, 1.349859, -0.606531],
    );
    row(
        loss(
            "cispo",
            &[("clip_low_threshold", 0.8), ("clip_high_threshold", 1.2)],
        ),
        [0.0, 0.5, 0.84, -1.12, -0.24, 1.6],
        1.58,
        [0.0, -1.0, -1.2, 0.8, 1.2, -0.8],
    );
}

#[test]
fn dro_matches_the_table() {
    row(
        loss("dro", &[("beta", 0.05)]),
        [0.225, 0.5, 0.70225, -1.396, -0.19775, 2.00625],
        1.83975,
        [-0.15, -1.0, -0.985, 0.98, 1.015, -1.025],
    );
}

#[test]
fn gspo_matches_the_table_for_both_clip_ranges() {
    let s = 0.941765;
    row(
        loss(
            "gspo",
            &[("clip_low_threshold", 0.8), ("clip_high_threshold", 1.2)],
        ),
        [0.0, -s, -s, s, s, -s],
        -s,
        [0.0, -s, -s, s, s, -s],
    );
    row(
        loss(
            "gspo",
            &[("clip_low_threshold", 0.95), ("clip_high_threshold", 1.05)],
        ),
        [0.0, -s, -s, 0.95, 0.95, -s],
        -0.925294,
        [0.0, -s, -s, 0.0, 0.0, -s],
    );
}

#[test]
fn the_client_side_custom_loss_surrogate_matches_the_table() {
    // C = Σ lp², G = 2·lp; the backward request sends weights −G to cross_entropy.
    let g: Vec<f64> = LP.iter().map(|lp| 2.0 * lp).collect();
    let inputs = LossInputs {
        weights: Some(g.iter().map(|g| -g).collect()),
        ..LossInputs::default()
    };
    let out = loss("cross_entropy", &[]).evaluate(&LP, &inputs).unwrap();
    assert_all_close(
        out.elementwise.as_deref().unwrap(),
        &[18.0, 0.5, 0.98, 3.92, 0.08, 8.0],
        TOL,
        "surrogate elementwise",
    );
    assert_close(out.loss, 31.48, TOL, "surrogate loss:sum");
    assert_all_close(&out.grad, &g, TOL, "server gradient = G");
}

#[test]
fn stable_reinforce_stand_in_is_importance_sampling_plus_a_quadratic_penalty() {
    let is = loss("importance_sampling", &[])
        .evaluate(&LP, &inputs())
        .unwrap();
    let plain = loss("stable_reinforce", &[])
        .evaluate(&LP, &inputs())
        .unwrap();
    assert_eq!(plain.grad, is.grad, "kl_coeff defaults to 0");
    let k = 0.1;
    let reg = loss("stable_reinforce", &[("kl_coeff", k)])
        .evaluate(&LP, &inputs())
        .unwrap();
    let penalty: f64 = LP
        .iter()
        .zip(SP)
        .map(|(l, s)| 0.5 * k * (l - s).powi(2))
        .sum();
    assert_close(reg.loss, is.loss + penalty, 1e-12, "loss");
    for t in 0..6 {
        assert_close(reg.grad[t], is.grad[t] + k * (LP[t] - SP[t]), 1e-12, "g");
    }
}

/// Central differences of the loss value with respect to lp.
fn finite_difference(loss: BuiltinLoss, lp: &[f64], inputs: &LossInputs) -> Vec<f64> {
    let h = 1e-6;
    (0..lp.len())
        .map(|t| {
            let mut up = lp.to_vec();
            let mut down = lp.to_vec();
            up[t] += h;
            down[t] -= h;
            (loss.evaluate(&up, inputs).unwrap().loss - loss.evaluate(&down, inputs).unwrap().loss)
                / (2.0 * h)
        })
        .collect()
}

#[test]
fn gradients_of_losses_without_stop_gradients_match_finite_differences() {
    // The table's point has no ratio exactly on a clip boundary, so every loss is smooth there.
    for l in [
        loss("cross_entropy", &[]),
        loss("importance_sampling", &[]),
        loss("ppo", &[]),
        loss(
            "ppo",
            &[("clip_low_threshold", 0.9), ("clip_high_threshold", 1.1)],
        ),
        loss("dro", &[("beta", 0.3)]),
        loss("stable_reinforce", &[("kl_coeff", 0.2)]),
    ] {
        let analytic = l.evaluate(&LP, &inputs()).unwrap().grad;
        let numeric = finite_difference(l, &LP, &inputs());
        assert_all_close(&analytic, &numeric, 1e-7, &format!("{l:?}"));
    }
}

#[test]
fn cispo_and_gspo_gradients_hold_their_detached_ratio_fixed() {
    // CISPO's coefficient and GSPO's sequence ratio are stop-gradients: g is the derivative of the
    // loss with those quantities frozen at their current values, not of the loss value itself.
    let cispo = loss("cispo", &[]);
    let g = cispo.evaluate(&LP, &inputs()).unwrap().grad;
    for t in 0..6 {
        let c = (LP[t] - SP[t]).exp().clamp(0.0, 4.0);
        assert_close(g[t], -c * A[t], 1e-12, "cispo g");
    }
    let gspo = loss("gspo", &[]);
    let out = gspo.evaluate(&LP, &inputs()).unwrap();
    // ℓ = mean over the mask of lp − sp = (0 + 0.3 − 0.4 + 0.3 − 0.5) / 5.
    let s = (-0.06f64).exp();
    for (g, a) in out.grad.iter().zip(A) {
        assert_close(*g, -s * a, 1e-12, "gspo g");
    }
}

#[test]
fn per_token_clip_thresholds_override_the_config() {
    // ppo with per-token bounds equal to the config's behaves exactly like the config.
    let with_inputs = LossInputs {
        clip_low: Some(vec![0.8; 6]),
        clip_high: Some(vec![1.2; 6]),
        ..inputs()
    };
    let ppo = loss(
        "ppo",
        &[("clip_low_threshold", 0.0), ("clip_high_threshold", 100.0)],
    );
    let expected = loss("ppo", &[]).evaluate(&LP, &inputs()).unwrap();
    assert_eq!(ppo.evaluate(&LP, &with_inputs).unwrap(), expected);
}
