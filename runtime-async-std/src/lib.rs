//! tinker-rs on async-std (and smol): the Tinker clients with hyper 1 on async-io as their HTTP
//! stack. No tokio reactor is used at run time, so the clients work under `smol::block_on` and
//! `async_std::task::block_on` alike.
//!
//! The clients are the ones of `tinker_core::client`, re-exported unchanged; this crate supplies
//! their I/O. `tinker-tokio` and `tinker-blocking` have the same names, so switching runtime is
//! changing one dependency line.
//!
//! ```no_run
//! use tinker_async_std::types::{AdamParams, Datum, LoraConfig, LossFn, ModelInput, TensorData};
//!
//! # fn main() -> tinker_async_std::Result<()> { async_std::task::block_on(async {
//! let service = tinker_async_std::connect_from_env()?;
//! let training = service
//!     .create_lora_training_client("Qwen/Qwen3-8B", LoraConfig::new(32))
//!     .await?;
//! let datum = Datum::new(ModelInput::from_tokens(vec![1, 2, 3]))
//!     .with_input("target_tokens", TensorData::from_i64(vec![2, 3, 4]))
//!     .with_input("weights", TensorData::from_f32(vec![1.0, 1.0, 1.0]));
//! let fb = training.forward_backward(vec![datum], LossFn::CrossEntropy).await?;
//! let step = training.optim_step(AdamParams::with_learning_rate(1e-4)).await?;
//! println!("loss {:?}", fb.await?.loss());
//! step.await?;
//! service.close(tinker_async_std::types::FinishReason::Success).await
//! }) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use tinker_core as core;

mod connect;
mod connector;
mod runtime;
mod transport;

pub use connect::{client_io, connect, connect_from_env, connect_with};
pub use runtime::AsyncStdRuntime;
pub use transport::{HyperTransport, ACCEPT_ENCODING};

pub use tinker_core::client::{
    ClientOptions, Pending, QueueStateEvent, RestClient, SampleStream, SamplingClient, SaveOptions,
    ServiceClient, TrainingClient,
};
pub use tinker_core::settings::Settings;
pub use tinker_core::{types, Error, ErrorKind, Result};
