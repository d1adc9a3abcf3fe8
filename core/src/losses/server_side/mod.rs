//! Server-side custom losses (protocol.md 11.4, SDK 0.38 `create_custom_loss`).
//!
//! The Python SDK traces a torch function into a node list with `torch.fx`. Rust has no tracer,
//! so a loss is written with a small typed expression API, [`ServerLossBuilder`] and [`Expr`],
//! that records the same node list: `placeholder` nodes for the parameters (`logprobs` first),
//! `call_function` / `call_method` nodes for the operations, named the way torch.fx names them,
//! and an `output` node returning `(loss, {"custom/<name>:sum": …})`.
//! [`ServerLossBuilder::build`] checks the SDK's rules locally and returns a [`ServerLoss`]:
//!
//! * the first parameter is `logprobs` with rank 1 or 2; at most 16 parameters named
//!   `[a-z_][a-z0-9_]{0,63}`, each of rank 0, 1 or 2;
//! * the loss is a scalar; metric keys are `custom/<name>:sum|mean` with `<name>` in
//!   `[a-z0-9_./-]{1,64}` ([`is_metric_key`]);
//! * only `torch`, `math` and `operator` functions, no modules, no captured tensors, no
//!   `item`/`numpy`/`tolist`/`backward` ([`check_graph`]).
//!
//! A [`ServerLoss`] is uploaded with `ServiceClient::create_custom_loss`, which returns a
//! [`CustomLossHandle`] for `TrainingClient::forward_backward_server_loss` (one ordinary
//! `forward_backward` with `loss_fn = "custom"`). It is also a [`crate::losses::CustomLoss`], so
//! the same definition runs on the client through the two-pass path of protocol.md 11.3.
//!
//! The same module evaluates graphs ([`ServerLoss::from_request`], [`ServerLoss::evaluate`]):
//! a tape interpreter over `f64` tensors of rank ≤ 2, differentiated in reverse mode — what the
//! local test server runs, and what the client-side path uses.
//!
//! # Supported operations
//!
//! | Builder | Node | Gradient notes |
//! |---|---|---|
//! | `a + b`, `a - b`, `a * b`, `a / b` (with `Expr` or `f64` on either side) | `operator.add/sub/mul/truediv` | PyTorch broadcasting |
//! | `-a` | `operator.neg` | |
//! | `a.pow(p)` | `operator.pow` | `p·a^(p−1)` |
//! | `exp`, `log`, `sigmoid`, `tanh`, `abs`, `sqrt`, `relu` | `torch.<op>` | `abs'(0) = relu'(0) = 0` |
//! | `logsigmoid` | `torch.nn.functional.logsigmoid` | stable for large `|x|` |
//! | `clamp(min, max)` | `torch.clamp` (kwargs `min`, `max`) | passes on `[min, max]` |
//! | `detach()` | method `detach` | stops the gradient |
//! | `sum()`, `mean()`, `sum_dim(d)`, `mean_dim(d)` | methods `sum`, `mean` | |
//! | `index(i)`, `slice(start, stop)` | `operator.getitem` (int, `{"slice": …}`) | scatter back |
//!
//! The interpreter also accepts what torch.fx emits for the same operations written other ways:
//! `torch.add/sub/mul/div/pow/neg/sum/mean/clamp/clip/relu/special.expit`, the tensor methods of
//! the same names plus `float`, `contiguous` and `clone` (identities), `sum`/`mean` with `dim`
//! and `keepdim`, and `getitem` with a tuple of integers and slices. Anything else is rejected
//! naming the node.
//!
//! ```
//! use tinker_core::losses::server_side::{ServerLossBuilder, Tensor};
//! // A sigmoid-weighted NLL with a mean-logprob metric.
//! let b = ServerLossBuilder::new("weighted", 1).unwrap();
//! let lp = b.logprobs();
//! let w = b.input("weights", 1);
//! let loss = -(&lp * w.sigmoid()).sum();
//! let mean_lp = lp.mean();
//! let def = b.build(&loss, &[("custom/mean_lp:mean", &mean_lp)]).unwrap();
//! let out = def
//!     .evaluate(&[
//!         Tensor::new(vec![2], vec![-1.0, -2.0]).unwrap(),
//!         Tensor::new(vec![2], vec![0.0, 0.0]).unwrap(),
//!     ])
//!     .unwrap();
//! assert_eq!(out.loss, 1.5);
//! assert_eq!(out.grad_logprobs, vec![-0.5, -0.5]);
//! assert_eq!(out.metrics, vec![("custom/mean_lp:mean".to_string(), -1.5)]);
//! ```

mod builder;
mod graph;
mod handle;
mod interpret;

#[cfg(test)]
mod tests;

pub use builder::{combine_metrics, Expr, ServerLoss, ServerLossBuilder};
pub use graph::{check_graph, is_metric_key, Arg, GraphNode, NodeOp};
pub use handle::CustomLossHandle;
pub use interpret::{DatumEvaluation, Program, Tensor};

/// The operation names the interpreter knows, for error messages.
pub(crate) const SUPPORTED_OPERATIONS: &str = "add, sub, mul, truediv/div, pow, neg, exp, log, \
    sigmoid, logsigmoid, tanh, abs, sqrt, relu, clamp/clip, detach, float/contiguous/clone, \
    sum, mean, getitem";
