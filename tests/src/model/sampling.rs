//! Sampling: temperature, top-k and top-p over the toy model's next-token distribution, with a
//! seed, stop tokens, stop strings and prompt logprobs.
//!
//! Emulator choices (documented because the service does not publish them):
//! * Reported logprobs (sampled tokens, prompt, top-k) are the model's **temperature-1,
//!   unfiltered** log-probabilities, whatever temperature/top-k/top-p shaped the draw: the real
//!   service does the same (workloads.md P7, tinker-feedback#148 "returned logprobs ignore
//!   temperature/top-k"). At temperature 1 without filtering they are exactly the logprobs
//!   training computes for the same tokens.
//! * Filtering order: temperature scaling, then top-k, then top-p (the smallest set of most likely
//!   tokens whose renormalised mass reaches `top_p`), then renormalisation. Temperature 0 is
//!   greedy (ties: lowest id).
//! * Stops: `stop = null` stops on the model's EOS token; a non-empty list stops on exactly the
//!   listed tokens or strings (EOS is no longer implicit); `[]` disables every stop, EOS included
//!   (protocol.md 9.4). The token that completes a stop is kept in the output. Stop strings match
//!   the generated tokens' bytes under the [byte tokenizer](super::tokenizer).
//! * `max_tokens = None` means [`DEFAULT_MAX_TOKENS`].

use tinker_core::types::{ModelInput, TokenId};

use super::error::ModelError;
use super::inputs::{positions, Position};
use super::rng::SplitMix64;
use super::tokenizer::token_byte;
use super::{log_sum_exp, ToyModel};

/// Generation length when the request leaves `max_tokens` unset.
pub const DEFAULT_MAX_TOKENS: usize = 32;

/// The top logprobs of one position: (token, logprob), most likely first.
pub type TopLogprobs = Vec<(TokenId, f64)>;

/// The request's `stop` field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Stop {
    /// `null`: stop on the model's EOS token.
    #[default]
    Default,
    /// Stop token ids (`[]` disables all stops).
    Tokens(Vec<TokenId>),
    /// Stop strings (`[]` disables all stops).
    Strings(Vec<String>),
}

/// `SamplingParams` plus the request's logprob options.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleSettings {
    /// Tokens to generate at most (`None` = [`DEFAULT_MAX_TOKENS`]).
    pub max_tokens: Option<usize>,
    /// Softmax temperature; 0 = greedy.
    pub temperature: f64,
    /// Keep only the k most likely tokens; -1 = off.
    pub top_k: i64,
    /// Nucleus mass in (0, 1]; 1 = off.
    pub top_p: f64,
    /// Stop condition.
    pub stop: Stop,
    /// Return `prompt_logprobs`.
    pub prompt_logprobs: bool,
    /// Return this many top logprobs per prompt position (0 = none).
    pub topk_prompt_logprobs: usize,
    /// Return this many top logprobs per generated position (0 = none).
    pub topk_sample_logprobs: usize,
}

impl Default for SampleSettings {
    fn default() -> SampleSettings {
        SampleSettings {
            max_tokens: None,
            temperature: 1.0,
            top_k: -1,
            top_p: 1.0,
            stop: Stop::Default,
            prompt_logprobs: false,
            topk_prompt_logprobs: 0,
            topk_sample_logprobs: 0,
        }
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// A stop token, stop string or EOS was generated.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

impl StopReason {
    /// The wire name (`"stop"` / `"length"`).
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Stop => "stop",
            StopReason::Length => "length",
        }
    }
}

/// One generated sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledSequence {
    /// Generated token ids (including the one that triggered a stop).
    pub tokens: Vec<TokenId>,
    /// Temperature-1 logprob of each generated token.
    pub logprobs: Vec<f64>,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Per generated position, the top `topk_sample_logprobs` (token, logprob), best first.
    pub topk_logprobs: Option<Vec<TopLogprobs>>,
}

/// The result of one sample request.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleResult {
    /// `num_samples` sequences.
    pub sequences: Vec<SampledSequence>,
    /// Per prompt position: `None` for the first and for media positions, else the logprob of the
    /// prompt token given the previous position.
    pub prompt_logprobs: Option<Vec<Option<f64>>>,
    /// Per prompt position (`None` for the first): the top `topk_prompt_logprobs` (token, logprob)
    /// of the distribution that position was drawn from.
    pub topk_prompt_logprobs: Option<Vec<Option<TopLogprobs>>>,
}

/// The next-token distribution of one context, ready to sample from.
struct Dist {
    /// Temperature-1 log-probabilities of all tokens.
    logprobs: Vec<f64>,
    /// Candidates after temperature/top-k/top-p, with cumulative (unnormalised) mass.
    candidates: Vec<(usize, f64)>,
}

impl Dist {
    fn draw(&self, rng: &mut SplitMix64) -> usize {
        let total = self.candidates.last().map_or(0.0, |c| c.1);
        let u = rng.next_f64() * total;
        self.candidates
            .iter()
            .find(|c| u < c.1)
            .or(self.candidates.last())
            .map_or(0, |c| c.0)
    }
}

impl ToyModel {
    /// Generates `num_samples` continuations of `prompt`. The same seed and inputs always give the
    /// same result.
    pub fn sample(
        &self,
        prompt: &ModelInput,
        settings: &SampleSettings,
        num_samples: usize,
        seed: u64,
    ) -> Result<SampleResult, ModelError> {
        check_settings(settings, num_samples)?;
        let contexts = self.prompt_contexts(prompt)?;
        let max_tokens = settings.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        let (stop_tokens, stop_strings): (Vec<TokenId>, Vec<Vec<u8>>) = match &settings.stop {
            Stop::Default => (vec![self.spec.eos_token], vec![]),
            Stop::Tokens(t) => (t.clone(), vec![]),
            Stop::Strings(s) => (vec![], s.iter().map(|s| s.as_bytes().to_vec()).collect()),
        };

        let mut cache: Vec<Option<Dist>> = (0..=self.spec.vocab_size).map(|_| None).collect();
        let mut rng = SplitMix64::new(seed);
        let mut sequences = Vec::with_capacity(num_samples);
        let last = *contexts.last().unwrap_or(&self.spec.vocab_size);
        for _ in 0..num_samples {
            let mut ctx = last;
            let mut seq = SampledSequence {
                tokens: Vec::new(),
                logprobs: Vec::new(),
                stop_reason: StopReason::Length,
                topk_logprobs: (settings.topk_sample_logprobs > 0).then(Vec::new),
            };
            let mut text = Vec::new();
            while seq.tokens.len() < max_tokens {
                let dist = cache[ctx].get_or_insert_with(|| self.dist(ctx, settings));
                let token = dist.draw(&mut rng);
                seq.tokens.push(token as TokenId);
                seq.logprobs.push(dist.logprobs[token]);
                if let Some(top) = &mut seq.topk_logprobs {
                    top.push(top_k(&dist.logprobs, settings.topk_sample_logprobs));
                }
                let byte = token_byte(token as TokenId);
                text.extend(byte);
                let hit_string = byte.is_some()
                    && stop_strings
                        .iter()
                        .any(|s| !s.is_empty() && text.ends_with(s));
                if stop_tokens.contains(&(token as TokenId)) || hit_string {
                    seq.stop_reason = StopReason::Stop;
                    break;
                }
                ctx = token;
            }
            sequences.push(seq);
        }

        let needs_table = settings.prompt_logprobs || settings.topk_prompt_logprobs > 0;
        let tables: Vec<Option<Vec<f64>>> = if needs_table {
            // Row i holds the distribution position i was drawn from (after position i − 1).
            std::iter::once(None)
                .chain(
                    contexts
                        .windows(2)
                        .map(|w| Some(self.context_logprobs(w[0]))),
                )
                .collect()
        } else {
            Vec::new()
        };
        let prompt_positions = positions(prompt)?;
        let prompt_logprobs = settings.prompt_logprobs.then(|| {
            tables
                .iter()
                .zip(&prompt_positions)
                .map(|(table, pos)| match (table, pos) {
                    (Some(t), Position::Token(tok)) => Some(t[*tok as usize]),
                    _ => None,
                })
                .collect()
        });
        let topk_prompt_logprobs = (settings.topk_prompt_logprobs > 0).then(|| {
            tables
                .iter()
                .map(|t| t.as_ref().map(|t| top_k(t, settings.topk_prompt_logprobs)))
                .collect()
        });
        Ok(SampleResult {
            sequences,
            prompt_logprobs,
            topk_prompt_logprobs,
        })
    }

    /// `compute_logprobs`: the prompt logprobs of `prompt` (first position and media positions
    /// `None`), at temperature 1.
    pub fn prompt_logprobs(&self, prompt: &ModelInput) -> Result<Vec<Option<f64>>, ModelError> {
        let settings = SampleSettings {
            max_tokens: Some(1),
            prompt_logprobs: true,
            ..SampleSettings::default()
        };
        let result = self.sample(prompt, &settings, 1, 0)?;
        Ok(result.prompt_logprobs.unwrap_or_default())
    }

    /// Context indices of a prompt, checking token ids.
    fn prompt_contexts(&self, prompt: &ModelInput) -> Result<Vec<usize>, ModelError> {
        let positions =
            positions(prompt).map_err(|e| ModelError::user(format!("prompt.{}", e.message)))?;
        if positions.is_empty() {
            return Err(ModelError::user("prompt: the prompt is empty"));
        }
        positions
            .iter()
            .enumerate()
            .map(|(j, p)| self.context_checked(*p, j))
            .collect()
    }

    fn context_checked(&self, p: Position, j: usize) -> Result<usize, ModelError> {
        match p {
            Position::Media => Ok(self.spec.vocab_size),
            Position::Token(t) => self.token_index(i64::from(t), &format!("prompt position {j}")),
        }
    }

    /// Temperature-1 log-probabilities after a context.
    fn context_logprobs(&self, ctx: usize) -> Vec<f64> {
        let z = self.logits(ctx);
        let lse = log_sum_exp(z.as_slice());
        z.iter().map(|x| x - lse).collect()
    }

    /// The sampling distribution of a context under `settings`.
    fn dist(&self, ctx: usize, settings: &SampleSettings) -> Dist {
        let logprobs = self.context_logprobs(ctx);
        // Most likely first; ties by lowest id, so greedy and top-k are deterministic.
        let mut order: Vec<usize> = (0..logprobs.len()).collect();
        order.sort_by(|&a, &b| logprobs[b].total_cmp(&logprobs[a]).then(a.cmp(&b)));
        if settings.temperature == 0.0 {
            return Dist {
                candidates: vec![(order[0], 1.0)],
                logprobs,
            };
        }
        if settings.top_k > 0 {
            order.truncate(settings.top_k as usize);
        }
        // Temperature-scaled weights relative to the best token (exp(0) = 1), so no overflow.
        let best = logprobs[order[0]];
        let weights: Vec<f64> = order
            .iter()
            .map(|&t| ((logprobs[t] - best) / settings.temperature).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut keep = weights.len();
        if settings.top_p < 1.0 {
            let mut mass = 0.0;
            for (i, w) in weights.iter().enumerate() {
                mass += w / total;
                if mass >= settings.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        let mut cumulative = 0.0;
        let candidates = order[..keep]
            .iter()
            .zip(&weights)
            .map(|(&t, w)| {
                cumulative += w;
                (t, cumulative)
            })
            .collect();
        Dist {
            logprobs,
            candidates,
        }
    }
}

/// The `k` most likely (token, logprob) pairs, best first, ties by lowest id.
fn top_k(logprobs: &[f64], k: usize) -> TopLogprobs {
    let mut order: Vec<usize> = (0..logprobs.len()).collect();
    order.sort_by(|&a, &b| logprobs[b].total_cmp(&logprobs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|t| (t as TokenId, logprobs[t]))
        .collect()
}

fn check_settings(s: &SampleSettings, num_samples: usize) -> Result<(), ModelError> {
    let bad = |m: String| Err(ModelError::user(m));
    if num_samples == 0 {
        return bad("num_samples: must be at least 1".into());
    }
    if s.max_tokens == Some(0) {
        return bad("sampling_params.max_tokens: must be at least 1".into());
    }
    if !s.temperature.is_finite() || s.temperature < 0.0 {
        return bad(format!(
            "sampling_params.temperature: {} must be a finite number ≥ 0",
            s.temperature
        ));
    }
    if s.top_k == 0 || s.top_k < -1 {
        return bad(format!(
            "sampling_params.top_k: {} must be -1 (off) or at least 1",
            s.top_k
        ));
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return bad(format!(
            "sampling_params.top_p: {} must be in (0, 1]",
            s.top_p
        ));
    }
    if let Stop::Strings(strings) = &s.stop {
        if strings.iter().any(String::is_empty) {
            return bad("sampling_params.stop: stop strings must not be empty".into());
        }
    }
    Ok(())
}
