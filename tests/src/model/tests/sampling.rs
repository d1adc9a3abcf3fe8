//! Sampling: draws follow the model's distribution (shaped by temperature, top-k, top-p), seeds
//! reproduce, stops behave as documented, and reported logprobs are the temperature-1 logprobs
//! training computes.

use tinker_core::types::{Chunk, ModelInput};

use super::super::tokenizer::decode_bytes;
use super::super::{ModelSpec, Position, SampleSettings, Stop, StopReason, ToyModel};
use super::{logprobs, sft, small_model};

const DRAWS: usize = 20_000;
const PREV: i32 = 3;

/// `DRAWS` single-token samples after token `PREV`, counted per token.
fn histogram(model: &ToyModel, settings: SampleSettings, seed: u64) -> Vec<usize> {
    let settings = SampleSettings {
        max_tokens: Some(1),
        stop: Stop::Tokens(vec![]),
        ..settings
    };
    let result = model
        .sample(&ModelInput::from_tokens(vec![PREV]), &settings, DRAWS, seed)
        .unwrap();
    let mut counts = vec![0; model.vocab_size()];
    for s in &result.sequences {
        assert_eq!(s.tokens.len(), 1);
        counts[s.tokens[0] as usize] += 1;
    }
    counts
}

/// Pearson's χ² test of `counts` against `probs`. Bins expected to hold fewer than 5 draws are
/// pooled (the usual validity condition); tokens with probability 0 must never be drawn.
///
/// The threshold is the 99.9 % quantile of χ² with the bins' degrees of freedom (Wilson–Hilferty
/// approximation), so a correct sampler passes for 999 seeds in 1000 — and the seed is fixed, so
/// the test is deterministic. A wrong distribution (temperature or filtering ignored) gives χ²
/// in the thousands at 20 000 draws.
fn assert_matches(counts: &[usize], probs: &[f64], what: &str) {
    let n: usize = counts.iter().sum();
    let (mut chi2, mut bins) = (0.0, 0usize);
    let (mut pooled_o, mut pooled_e) = (0.0, 0.0);
    for (t, (&c, &p)) in counts.iter().zip(probs).enumerate() {
        if p == 0.0 {
            assert_eq!(
                c, 0,
                "{what}: token {t} has probability 0 but was drawn {c} times"
            );
            continue;
        }
        let e = p * n as f64;
        if e < 5.0 {
            pooled_o += c as f64;
            pooled_e += e;
        } else {
            chi2 += (c as f64 - e).powi(2) / e;
            bins += 1;
        }
    }
    if pooled_e > 0.0 {
        chi2 += (pooled_o - pooled_e).powi(2) / pooled_e.max(1e-300);
        bins += 1;
    }
    let dof = (bins.max(2) - 1) as f64;
    let z = 3.090; // 99.9 % normal quantile
    let q = dof * (1.0 - 2.0 / (9.0 * dof) + z * (2.0 / (9.0 * dof)).sqrt()).powi(3);
    assert!(
        chi2 < q,
        "{what}: χ² = {chi2:.1} ≥ {q:.1} with {dof} degrees of freedom"
    );
}

fn model_probs(model: &ToyModel) -> Vec<f64> {
    model
        .next_token_logprobs(Position::Token(PREV))
        .unwrap()
        .iter()
        .map(|lp| lp.exp())
        .collect()
}

/// Normalises non-negative weights.
fn normalise(w: Vec<f64>) -> Vec<f64> {
    let total: f64 = w.iter().sum();
    w.into_iter().map(|x| x / total).collect()
}

/// Token ids sorted from most to least likely.
fn ranked(p: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    order
}

#[test]
fn draws_at_temperature_one_follow_the_model_distribution() {
    let model = small_model();
    let counts = histogram(&model, SampleSettings::default(), 1);
    assert_matches(&counts, &model_probs(&model), "temperature 1");
}

#[test]
fn temperature_sharpens_or_flattens_the_distribution() {
    let model = small_model();
    let p = model_probs(&model);
    for temperature in [0.5, 2.0] {
        let counts = histogram(
            &model,
            SampleSettings {
                temperature,
                ..SampleSettings::default()
            },
            2,
        );
        let expected = normalise(p.iter().map(|p| p.powf(1.0 / temperature)).collect());
        assert_matches(&counts, &expected, &format!("temperature {temperature}"));
    }
    // Temperature 0 is greedy: always the most likely token.
    let counts = histogram(
        &model,
        SampleSettings {
            temperature: 0.0,
            ..SampleSettings::default()
        },
        3,
    );
    assert_eq!(counts[ranked(&p)[0]], DRAWS);
}

#[test]
fn top_k_keeps_only_the_k_most_likely_tokens() {
    let model = small_model();
    let p = model_probs(&model);
    let top3 = &ranked(&p)[..3];
    let counts = histogram(
        &model,
        SampleSettings {
            top_k: 3,
            ..SampleSettings::default()
        },
        4,
    );
    let expected = normalise(
        (0..p.len())
            .map(|t| if top3.contains(&t) { p[t] } else { 0.0 })
            .collect(),
    );
    assert_matches(&counts, &expected, "top_k 3");
}

#[test]
fn top_p_keeps_the_smallest_nucleus_reaching_the_mass() {
    let model = small_model();
    let p = model_probs(&model);
    let order = ranked(&p);
    let top_p = 0.6;
    let mut nucleus = Vec::new();
    let mut mass = 0.0;
    for &t in &order {
        nucleus.push(t);
        mass += p[t];
        if mass >= top_p {
            break;
        }
    }
    assert!(
        nucleus.len() >= 2 && nucleus.len() < p.len(),
        "the scenario needs a real cut"
    );
    let counts = histogram(
        &model,
        SampleSettings {
            top_p,
            ..SampleSettings::default()
        },
        5,
    );
    let expected = normalise(
        (0..p.len())
            .map(|t| if nucleus.contains(&t) { p[t] } else { 0.0 })
            .collect(),
    );
    assert_matches(&counts, &expected, "top_p 0.6");
}

#[test]
fn the_same_seed_gives_the_same_samples_and_another_seed_does_not() {
    let model = small_model();
    let prompt = ModelInput::from_tokens(vec![1, 2]);
    let settings = SampleSettings {
        max_tokens: Some(12),
        stop: Stop::Tokens(vec![]),
        ..SampleSettings::default()
    };
    let a = model.sample(&prompt, &settings, 4, 42).unwrap();
    let b = model.sample(&prompt, &settings, 4, 42).unwrap();
    let c = model.sample(&prompt, &settings, 4, 43).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.sequences, c.sequences);
    // Several samples of one request differ from each other.
    assert_ne!(a.sequences[0].tokens, a.sequences[1].tokens);
}

#[test]
fn reported_logprobs_are_temperature_one_and_match_training() {
    let model = small_model();
    let prompt = ModelInput::from_tokens(vec![5]);
    let settings = SampleSettings {
        max_tokens: Some(8),
        temperature: 0.5,
        top_k: 4,
        stop: Stop::Tokens(vec![]),
        ..SampleSettings::default()
    };
    let seq = &model.sample(&prompt, &settings, 1, 9).unwrap().sequences[0];
    // The same tokens scored by a forward pass: position i reads token i, predicts token i + 1.
    let mut full = vec![5];
    full.extend(&seq.tokens);
    let targets: Vec<i64> = full[1..].iter().map(|&t| i64::from(t)).collect();
    let datum = sft(&full[..full.len() - 1], &targets, &vec![0.0; targets.len()]);
    let trained = &logprobs(&model, &[datum])[0];
    for (i, (s, t)) in seq.logprobs.iter().zip(trained).enumerate() {
        assert!(
            (s - t).abs() < 1e-6,
            "token {i}: sampled {s} vs forward {t}"
        );
    }
}

/// The greedy continuation of `prompt` with no stops.
fn greedy(model: &ToyModel, prompt: &[i32], n: usize) -> Vec<i32> {
    let settings = SampleSettings {
        max_tokens: Some(n),
        temperature: 0.0,
        stop: Stop::Tokens(vec![]),
        ..SampleSettings::default()
    };
    let out = model
        .sample(&ModelInput::from_tokens(prompt.to_vec()), &settings, 1, 0)
        .unwrap();
    assert_eq!(out.sequences[0].stop_reason, StopReason::Length);
    out.sequences[0].tokens.clone()
}

fn run(model: &ToyModel, prompt: &[i32], stop: Stop, max: usize) -> (Vec<i32>, StopReason) {
    let settings = SampleSettings {
        max_tokens: Some(max),
        temperature: 0.0,
        stop,
        ..SampleSettings::default()
    };
    let seq = model
        .sample(&ModelInput::from_tokens(prompt.to_vec()), &settings, 1, 0)
        .unwrap()
        .sequences
        .remove(0);
    (seq.tokens, seq.stop_reason)
}

#[test]
fn eos_stops_only_when_stop_is_null() {
    // Make the model's EOS the token greedy decoding reaches second.
    let base = small_model();
    let path = greedy(&base, &[2], 6);
    let mut model = base.clone();
    model.spec.eos_token = path[1];

    let eos_at = path.iter().position(|&t| t == path[1]).unwrap() + 1;
    let (tokens, reason) = run(&model, &[2], Stop::Default, 6);
    assert_eq!(
        (tokens.as_slice(), reason),
        (&path[..eos_at], StopReason::Stop),
        "null stop: EOS"
    );
    let (tokens, reason) = run(&model, &[2], Stop::Tokens(vec![]), 6);
    assert_eq!(
        (tokens, reason),
        (path.clone(), StopReason::Length),
        "[] disables EOS"
    );
    // An explicit list replaces the implicit EOS.
    let (tokens, reason) = run(&model, &[2], Stop::Tokens(vec![path[2]]), 6);
    let expected_len = path.iter().position(|&t| t == path[2]).unwrap() + 1;
    assert_eq!(
        (tokens.as_slice(), reason),
        (&path[..expected_len], StopReason::Stop)
    );
}

#[test]
fn stop_strings_match_the_generated_bytes() {
    // V = 256: every token is a byte of the byte tokenizer.
    let model = ToyModel::new(ModelSpec::new("toy/bytes", 2).with_vocab_size(256)).unwrap();
    let path = greedy(&model, &[b'a' as i32], 10);
    let text = decode_bytes(&path);
    // Stop on the text of generated tokens 2..=3; generation ends at that string's first end.
    let stop = String::from_utf8_lossy(&text[2..4]).into_owned();
    assert_eq!(
        stop.as_bytes(),
        &text[2..4],
        "the scenario needs ASCII-safe bytes"
    );
    let first_end = (2..=text.len())
        .find(|&end| text[..end].ends_with(stop.as_bytes()))
        .unwrap();
    let (tokens, reason) = run(&model, &[b'a' as i32], Stop::Strings(vec![stop]), 10);
    assert_eq!(reason, StopReason::Stop);
    assert_eq!(
        tokens,
        path[..first_end].to_vec(),
        "the stopping token is kept"
    );
    // The prompt's own bytes never trigger a stop string.
    let (tokens, reason) = run(&model, &[b'a' as i32], Stop::Strings(vec!["a".into()]), 10);
    assert_eq!(reason == StopReason::Stop, path.contains(&(b'a' as i32)));
    assert!(!tokens.is_empty());
}

#[test]
fn max_tokens_ends_with_length() {
    let model = small_model();
    let (tokens, reason) = run(&model, &[1], Stop::Tokens(vec![]), 3);
    assert_eq!((tokens.len(), reason), (3, StopReason::Length));
}

#[test]
fn prompt_logprobs_are_none_first_and_for_media_and_match_forward() {
    let model = small_model();
    let prompt = ModelInput::from_chunks(vec![
        Chunk::tokens(vec![4, 9]),
        Chunk::Image {
            data: bytes::Bytes::from_static(b"img"),
            format: tinker_core::types::ImageFormat::Jpeg,
            expected_tokens: Some(1),
        },
        Chunk::tokens(vec![9, 2]),
    ]);
    let settings = SampleSettings {
        max_tokens: Some(1),
        prompt_logprobs: true,
        topk_prompt_logprobs: 3,
        ..SampleSettings::default()
    };
    let out = model.sample(&prompt, &settings, 1, 0).unwrap();
    let plp = out.prompt_logprobs.unwrap();
    assert_eq!(plp.len(), 5);
    assert_eq!(plp[0], None, "the first token has no logprob");
    assert_eq!(plp[2], None, "a media position has no token logprob");
    let after = |p: Position, t: usize| model.next_token_logprobs(p).unwrap()[t];
    assert_eq!(plp[1], Some(after(Position::Token(4), 9)));
    assert_eq!(plp[3], Some(after(Position::Media, 9)));
    assert_eq!(plp[4], Some(after(Position::Token(9), 2)));
    assert_eq!(
        model.prompt_logprobs(&prompt).unwrap(),
        plp,
        "compute_logprobs"
    );

    let topk = out.topk_prompt_logprobs.unwrap();
    assert_eq!(topk[0], None);
    for (i, row) in topk.iter().enumerate().skip(1) {
        let row = row.as_ref().unwrap();
        assert_eq!(row.len(), 3);
        assert!(
            row.windows(2).all(|w| w[0].1 >= w[1].1),
            "row {i} best first"
        );
        // Nothing outside the row beats its last entry.
        let prev = [
            Position::Token(4),
            Position::Token(9),
            Position::Media,
            Position::Token(9),
        ][i - 1];
        let all = model.next_token_logprobs(prev).unwrap();
        let beating = all.iter().filter(|&&lp| lp > row[2].1).count();
        assert!(beating <= 2, "row {i}");
        assert_eq!(row[0].1, all[row[0].0 as usize]);
    }
}

#[test]
fn top_k_sample_logprobs_accompany_each_generated_token() {
    let model = small_model();
    let settings = SampleSettings {
        max_tokens: Some(4),
        stop: Stop::Tokens(vec![]),
        topk_sample_logprobs: 2,
        ..SampleSettings::default()
    };
    let out = model
        .sample(&ModelInput::from_tokens(vec![1]), &settings, 2, 3)
        .unwrap();
    for seq in &out.sequences {
        let top = seq.topk_logprobs.as_ref().unwrap();
        assert_eq!(top.len(), seq.tokens.len());
        let mut prev = 1;
        for (row, &tok) in top.iter().zip(&seq.tokens) {
            let all = model.next_token_logprobs(Position::Token(prev)).unwrap();
            let best = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(row[0].1, best);
            prev = tok;
        }
    }
    assert!(out.prompt_logprobs.is_none() && out.topk_prompt_logprobs.is_none());
}

#[test]
fn bad_sampling_settings_are_user_errors() {
    let model = small_model();
    let prompt = ModelInput::from_tokens(vec![1]);
    let cases = [
        (
            SampleSettings {
                temperature: -0.1,
                ..Default::default()
            },
            1,
            "temperature",
        ),
        (
            SampleSettings {
                top_k: 0,
                ..Default::default()
            },
            1,
            "top_k",
        ),
        (
            SampleSettings {
                top_p: 0.0,
                ..Default::default()
            },
            1,
            "top_p",
        ),
        (
            SampleSettings {
                max_tokens: Some(0),
                ..Default::default()
            },
            1,
            "max_tokens",
        ),
        (
            SampleSettings {
                stop: Stop::Strings(vec![String::new()]),
                ..Default::default()
            },
            1,
            "stop",
        ),
        (SampleSettings::default(), 0, "num_samples"),
    ];
    for (settings, n, field) in cases {
        let err = model.sample(&prompt, &settings, n, 0).unwrap_err();
        assert!(
            err.is_user() && err.message.contains(field),
            "{field}: {err}"
        );
    }
    let err = model
        .sample(
            &ModelInput::from_tokens(vec![16]),
            &SampleSettings::default(),
            1,
            0,
        )
        .unwrap_err();
    assert!(
        err.is_user() && err.message.contains("outside the vocabulary"),
        "{err}"
    );
    let err = model
        .sample(
            &ModelInput::from_tokens(vec![]),
            &SampleSettings::default(),
            1,
            0,
        )
        .unwrap_err();
    assert!(err.message.contains("empty"), "{err}");
}
