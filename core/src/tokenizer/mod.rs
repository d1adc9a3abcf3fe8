//! Tokenizers: which one a base model uses, loading it, and turning text and conversations into
//! [`crate::types::ModelInput`]s.
//!
//! | piece | what |
//! |---|---|
//! | [`TokenizerRef`] | the SDK's rules for the Hub repository (and revision) of a model's tokenizer |
//! | [`HubSettings`] | the Hub base URL (`HF_ENDPOINT`) and token (`HF_TOKEN`) |
//! | [`Tokenizer`] | encode / decode with a `tokenizer.json` (feature `tokenizers`) |
//! | [`ChatRenderer`] | conversations → prompts and weighted training examples (feature `tokenizers`) |
//! | [`fetch_tokenizer`] | the download + cache behind `TrainingClient::get_tokenizer` and `SamplingClient::get_tokenizer` |
//!
//! Everything but [`fetch_tokenizer`] is pure: a tokenizer is built from the bytes of its
//! `tokenizer.json`, however they were obtained (the clients fetch them from the Hub; a program
//! may read a local file and call [`Tokenizer::from_json_bytes`]).

#[cfg(feature = "tokenizers")]
mod chat;
#[cfg(feature = "tokenizers")]
mod encoding;
mod hub;
#[cfg(feature = "tokenizers")]
mod load;
mod resolve;
#[cfg(all(test, feature = "tokenizers"))]
mod tests;

#[cfg(feature = "tokenizers")]
pub use chat::{ChatFormat, ChatRenderer, Message, SupervisedExample, TrainOnWhat};
#[cfg(feature = "tokenizers")]
pub use encoding::Tokenizer;
pub use hub::{encode_segment, user_agent, HubSettings, DEFAULT_HUB_ENDPOINT};
#[cfg(feature = "tokenizers")]
pub(crate) use load::load_for_client;
#[cfg(feature = "tokenizers")]
pub use load::{fetch_tokenizer, MAX_TOKENIZER_JSON_BYTES, TOKENIZER_FILE};
pub use resolve::{TokenizerRef, DEFAULT_REVISION, LLAMA3_TOKENIZER_REPO};
