//! tinker-rs on plain threads: blocking Tinker clients with ureq as their HTTP stack. No async
//! runtime, no tokio.
//!
//! The clients have the same names and methods as in `tinker-tokio` and `tinker-async-std`,
//! minus `.await`. They are thin wrappers over the async clients of `tinker_core::client`: each
//! method runs its async twin to completion on the calling thread ([`executor`] explains how).
//!
//! ```no_run
//! use tinker_blocking::types::{AdamParams, Datum, LoraConfig, LossFn, ModelInput, TensorData};
//!
//! # fn main() -> tinker_blocking::Result<()> {
//! let service = tinker_blocking::connect_from_env()?;
//! let training = service.create_lora_training_client("Qwen/Qwen3-8B", LoraConfig::new(32))?;
//! let datum = Datum::new(ModelInput::from_tokens(vec![1, 2, 3]))
//!     .with_input("target_tokens", TensorData::from_i64(vec![2, 3, 4]))
//!     .with_input("weights", TensorData::from_f32(vec![1.0, 1.0, 1.0]));
//! // Submit both, then wait for both: the requests reach the server back to back.
//! let fb = training.forward_backward(vec![datum], LossFn::CrossEntropy)?;
//! let step = training.optim_step(AdamParams::with_learning_rate(1e-4))?;
//! println!("loss {:?}", fb.result()?.loss());
//! step.result()?;
//! service.close(tinker_blocking::types::FinishReason::Success)?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use tinker_core as core;

pub mod cli;
mod clients;
mod clock;
mod connect;
pub mod credentials;
pub mod download;
pub mod executor;
pub mod hf;
mod transport;

pub use clients::{
    Pending, RestClient, SampleStream, SamplingClient, ServiceClient, TrainingClient,
};
pub use clock::SystemClock;
pub use connect::{client_io, connect, connect_from_env, connect_with};
pub use transport::{transport_error_of, UreqTransport, ACCEPT_ENCODING};

pub use tinker_core::client::{ClientOptions, QueueStateEvent, SaveOptions};
pub use tinker_core::settings::Settings;
pub use tinker_core::{types, Error, ErrorKind, Result};
