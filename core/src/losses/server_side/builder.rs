//! Recording a per-datum loss as a graph: [`ServerLossBuilder`], [`Expr`] and the finished
//! [`ServerLoss`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Add, Div, Mul, Neg, Sub};
use std::rc::Rc;

use super::graph::{check_graph, Arg, GraphNode, NodeOp};
use super::interpret::{DatumEvaluation, Program, Tensor};
use crate::error::{Error, Result};
use crate::losses::{CustomLoss, CustomLossOutput, LogprobBatch};
use crate::types::{
    CreateCustomLossRequest, CreateCustomLossTag, CustomLossGraph, CustomLossInput, Datum,
};

/// Python builtins and keywords torch.fx will not use as node names (it appends `_1`, `_2`…).
const RESERVED_NAMES: &[&str] = &[
    "abs", "all", "any", "bool", "divmod", "float", "input", "int", "len", "list", "map", "max",
    "min", "next", "pow", "range", "round", "slice", "sorted", "str", "sum", "tuple", "type",
    "zip", "and", "or", "not", "in", "is", "if", "else", "for", "def", "return", "lambda",
];

#[derive(Debug, Default)]
struct State {
    name: String,
    params: Vec<GraphNode>,
    body: Vec<GraphNode>,
    inputs: Vec<CustomLossInput>,
    used: BTreeSet<String>,
    counts: BTreeMap<String, usize>,
    /// The first misuse (rank error, mixed builders); reported by [`ServerLossBuilder::build`].
    error: Option<Error>,
}

impl State {
    /// torch.fx's naming: the base name if free and not a Python builtin, else `base_1`, `base_2`…
    fn fresh_name(&mut self, base: &str) -> String {
        let mut n = self.counts.get(base).copied().unwrap_or(0);
        let mut candidate = if n == 0 {
            base.to_owned()
        } else {
            format!("{base}_{n}")
        };
        while self.used.contains(&candidate) || RESERVED_NAMES.contains(&candidate.as_str()) {
            n += 1;
            candidate = format!("{base}_{n}");
        }
        self.counts.insert(base.to_owned(), n);
        self.used.insert(candidate.clone());
        candidate
    }

    fn fail(&mut self, e: Error) {
        self.error.get_or_insert(e);
    }
}

/// Records a per-datum loss for `create_custom_loss` (protocol.md 11.4), the way the Python SDK
/// traces a torch function: each operation on an [`Expr`] appends a node.
///
/// The first parameter is always `logprobs` (the per-token target logprobs, shaped like the
/// datum's `target_tokens`); [`ServerLossBuilder::input`] declares the other `loss_fn_inputs` the
/// loss reads. [`ServerLossBuilder::build`] checks the graph and returns a [`ServerLoss`].
/// Misuse inside expressions (a rank error, combining expressions of two builders) is reported
/// there, since operators cannot return errors.
///
/// ```
/// use tinker_core::losses::server_side::ServerLossBuilder;
/// // The negative log-likelihood of protocol.md 11.4: −Σ logprobs·weights.
/// let b = ServerLossBuilder::new("neg_ll", 1).unwrap();
/// let weights = b.input("weights", 1);
/// let loss = -(b.logprobs() * weights).sum();
/// let nll = b.build(&loss, &[("custom/neg_ll:sum", &loss)]).unwrap();
/// assert_eq!(nll.inputs().len(), 2);
/// assert_eq!(nll.graph().nodes.len(), 6);
/// ```
#[derive(Debug, Clone)]
pub struct ServerLossBuilder {
    state: Rc<RefCell<State>>,
    logprobs: Expr,
}

/// A tensor value in a loss being recorded (a node of the graph).
///
/// Arithmetic with another `Expr` or an `f64` on either side (`+ - * /`, unary `-`) records
/// `operator.*` nodes; methods record the other operations. Ranks follow PyTorch
/// broadcasting (the larger of the two); reductions and integer indexing lower them.
#[derive(Debug, Clone)]
pub struct Expr {
    state: Rc<RefCell<State>>,
    name: String,
    rank: u8,
}

impl ServerLossBuilder {
    /// A builder for a loss called `name` whose `logprobs` have rank `logprobs_rank` (1 for
    /// per-token targets, 2 for `(N, K)` targets).
    pub fn new(name: &str, logprobs_rank: u8) -> Result<ServerLossBuilder> {
        if name.is_empty() {
            return Err(Error::invalid("custom_loss.name", "must not be empty"));
        }
        if !(1..=2).contains(&logprobs_rank) {
            return Err(Error::invalid(
                "custom_loss.inputs.logprobs",
                format!("logprobs have rank 1 or 2, got {logprobs_rank}"),
            ));
        }
        let state = Rc::new(RefCell::new(State {
            name: name.to_owned(),
            ..State::default()
        }));
        let logprobs = placeholder(&state, "logprobs", logprobs_rank);
        Ok(ServerLossBuilder { state, logprobs })
    }

    /// The `logprobs` parameter.
    pub fn logprobs(&self) -> Expr {
        self.logprobs.clone()
    }

    /// Declares the next parameter: the datum's `loss_fn_inputs[name]`, of rank 0, 1 or 2.
    /// Names must match `[a-z_][a-z0-9_]{0,63}`; at most 16 parameters (checked by `build`).
    pub fn input(&self, name: &str, rank: u8) -> Expr {
        placeholder(&self.state, name, rank)
    }

    /// Finishes the graph: `loss` is the datum's scalar loss, `metrics` scalar values reported as
    /// `custom/<name>:sum` (summed over datums) or `custom/<name>:mean` (averaged).
    pub fn build(self, loss: &Expr, metrics: &[(&str, &Expr)]) -> Result<ServerLoss> {
        for e in std::iter::once(loss).chain(metrics.iter().map(|(_, e)| *e)) {
            self.check_same(e)?;
        }
        let mut state = self.state.borrow_mut();
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        if loss.rank != 0 {
            return Err(Error::invalid(
                "custom_loss.loss",
                format!("the loss must be a scalar (rank 0), got rank {}; reduce it with sum() or mean()", loss.rank),
            ));
        }
        for (key, e) in metrics {
            if e.rank != 0 {
                return Err(Error::invalid(
                    format!("custom_loss.metrics.{key}"),
                    format!("metrics must be scalars (rank 0), got rank {}", e.rank),
                ));
            }
        }
        let output = GraphNode {
            op: NodeOp::Output,
            name: "output".into(),
            target: "output".into(),
            args: vec![Arg::Tuple(vec![
                Arg::Ref(loss.name.clone()),
                Arg::Dict(
                    metrics
                        .iter()
                        .map(|(k, e)| ((*k).to_owned(), Arg::Ref(e.name.clone())))
                        .collect(),
                ),
            ])],
            kwargs: Vec::new(),
        };
        let nodes: Vec<GraphNode> = state
            .params
            .iter()
            .chain(&state.body)
            .cloned()
            .chain(std::iter::once(output))
            .collect();
        ServerLoss::new(state.name.clone(), state.inputs.clone(), nodes)
    }

    fn check_same(&self, e: &Expr) -> Result<()> {
        if Rc::ptr_eq(&self.state, &e.state) {
            Ok(())
        } else {
            Err(Error::invalid(
                "custom_loss",
                format!("`{}` was recorded by another builder", e.name),
            ))
        }
    }
}

fn placeholder(state: &Rc<RefCell<State>>, name: &str, rank: u8) -> Expr {
    let mut s = state.borrow_mut();
    let node_name = s.fresh_name(name);
    s.params.push(GraphNode {
        op: NodeOp::Placeholder,
        name: node_name.clone(),
        target: name.to_owned(),
        args: Vec::new(),
        kwargs: Vec::new(),
    });
    s.inputs.push(CustomLossInput {
        name: name.to_owned(),
        rank,
    });
    if rank > 2 {
        s.fail(Error::invalid(
            format!("custom_loss.inputs.{name}"),
            format!("rank must be 0, 1 or 2, got {rank}"),
        ));
    }
    drop(s);
    Expr {
        state: state.clone(),
        name: node_name,
        rank: rank.min(2),
    }
}

impl Expr {
    /// The node's name in the graph.
    pub fn node_name(&self) -> &str {
        &self.name
    }

    /// The tensor rank (0 = scalar).
    pub fn rank(&self) -> u8 {
        self.rank
    }

    fn record(
        &self,
        op: NodeOp,
        target: &str,
        base: &str,
        args: Vec<Arg>,
        kwargs: Vec<(String, Arg)>,
        rank: u8,
    ) -> Expr {
        let mut s = self.state.borrow_mut();
        let name = s.fresh_name(base);
        s.body.push(GraphNode {
            op,
            name: name.clone(),
            target: target.to_owned(),
            args,
            kwargs,
        });
        drop(s);
        Expr {
            state: self.state.clone(),
            name,
            rank,
        }
    }

    fn arg(&self) -> Arg {
        Arg::Ref(self.name.clone())
    }

    fn function(&self, target: &str) -> Expr {
        let base = target.rsplit('.').next().unwrap_or(target);
        self.record(
            NodeOp::CallFunction,
            target,
            base,
            vec![self.arg()],
            Vec::new(),
            self.rank,
        )
    }

    fn method(&self, method: &str, extra: Vec<Arg>, rank: u8) -> Expr {
        let mut args = vec![self.arg()];
        args.extend(extra);
        self.record(NodeOp::CallMethod, method, method, args, Vec::new(), rank)
    }

    fn binary(&self, target: &str, lhs: Arg, rhs: Arg, other_rank: u8) -> Expr {
        let base = target.rsplit('.').next().unwrap_or(target);
        self.record(
            NodeOp::CallFunction,
            target,
            base,
            vec![lhs, rhs],
            Vec::new(),
            self.rank.max(other_rank),
        )
    }

    fn with(&self, other: &Expr, target: &str) -> Expr {
        if !Rc::ptr_eq(&self.state, &other.state) {
            self.state.borrow_mut().fail(Error::invalid(
                "custom_loss",
                format!(
                    "`{}` and `{}` were recorded by different builders",
                    self.name, other.name
                ),
            ));
        }
        self.binary(target, self.arg(), other.arg(), other.rank)
    }

    fn lowered(&self, what: &str) -> u8 {
        if self.rank == 0 {
            self.state.borrow_mut().fail(Error::invalid(
                format!("custom_loss.{}", self.name),
                format!(
                    "{what} needs a tensor of rank ≥ 1; `{}` is a scalar",
                    self.name
                ),
            ));
            return 0;
        }
        self.rank - 1
    }

    /// `torch.exp`.
    pub fn exp(&self) -> Expr {
        self.function("torch.exp")
    }

    /// `torch.log`.
    pub fn log(&self) -> Expr {
        self.function("torch.log")
    }

    /// `torch.sigmoid`.
    pub fn sigmoid(&self) -> Expr {
        self.function("torch.sigmoid")
    }

    /// `torch.nn.functional.logsigmoid` (numerically stable `log σ(x)`).
    pub fn logsigmoid(&self) -> Expr {
        self.function("torch.nn.functional.logsigmoid")
    }

    /// `torch.tanh`.
    pub fn tanh(&self) -> Expr {
        self.function("torch.tanh")
    }

    /// `torch.abs` (gradient 0 at 0).
    pub fn abs(&self) -> Expr {
        self.function("torch.abs")
    }

    /// `torch.sqrt`.
    pub fn sqrt(&self) -> Expr {
        self.function("torch.sqrt")
    }

    /// `torch.relu`.
    pub fn relu(&self) -> Expr {
        self.function("torch.relu")
    }

    /// `x ** exponent` (`operator.pow`).
    pub fn pow(&self, exponent: f64) -> Expr {
        self.binary("operator.pow", self.arg(), Arg::Float(exponent), 0)
    }

    /// `torch.clamp(x, min=…, max=…)`; give at least one bound. The gradient passes where
    /// `min ≤ x ≤ max`.
    pub fn clamp(&self, min: Option<f64>, max: Option<f64>) -> Expr {
        if min.is_none() && max.is_none() {
            self.state
                .borrow_mut()
                .fail(Error::invalid("custom_loss.clamp", "give min, max or both"));
        }
        let kwargs = [("min", min), ("max", max)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), Arg::Float(v))))
            .collect();
        self.record(
            NodeOp::CallFunction,
            "torch.clamp",
            "clamp",
            vec![self.arg()],
            kwargs,
            self.rank,
        )
    }

    /// `x.detach()`: the same value, no gradient through it.
    pub fn detach(&self) -> Expr {
        self.method("detach", Vec::new(), self.rank)
    }

    /// `x.sum()`: the sum of every element (a scalar).
    pub fn sum(&self) -> Expr {
        self.method("sum", Vec::new(), 0)
    }

    /// `x.mean()`: the mean of every element (a scalar).
    pub fn mean(&self) -> Expr {
        self.method("mean", Vec::new(), 0)
    }

    /// `x.sum(dim)` (negative `dim` counts from the end).
    pub fn sum_dim(&self, dim: i64) -> Expr {
        let rank = self.lowered("sum over a dimension");
        self.method("sum", vec![Arg::Int(dim)], rank)
    }

    /// `x.mean(dim)`.
    pub fn mean_dim(&self, dim: i64) -> Expr {
        let rank = self.lowered("mean over a dimension");
        self.method("mean", vec![Arg::Int(dim)], rank)
    }

    /// `x[i]` (`operator.getitem`): one entry of the first dimension (negative counts from the
    /// end).
    pub fn index(&self, i: i64) -> Expr {
        let rank = self.lowered("indexing");
        self.binary("operator.getitem", self.arg(), Arg::Int(i), 0)
            .with_rank(rank)
    }

    /// `x[start:stop]` along the first dimension (`None` = open end).
    pub fn slice(&self, start: Option<i64>, stop: Option<i64>) -> Expr {
        if self.rank == 0 {
            self.lowered("slicing");
        }
        let rank = self.rank;
        let bound = |b: Option<i64>| b.map_or(Arg::None, Arg::Int);
        self.binary(
            "operator.getitem",
            self.arg(),
            Arg::Slice(Box::new([bound(start), bound(stop), Arg::None])),
            0,
        )
        .with_rank(rank)
    }

    fn with_rank(mut self, rank: u8) -> Expr {
        self.rank = rank;
        self
    }
}

macro_rules! binary_ops {
    ($($trait:ident $method:ident $target:literal;)*) => {$(
        impl $trait<&Expr> for &Expr {
            type Output = Expr;
            fn $method(self, rhs: &Expr) -> Expr {
                self.with(rhs, $target)
            }
        }
        impl $trait<Expr> for Expr {
            type Output = Expr;
            fn $method(self, rhs: Expr) -> Expr {
                self.with(&rhs, $target)
            }
        }
        impl $trait<&Expr> for Expr {
            type Output = Expr;
            fn $method(self, rhs: &Expr) -> Expr {
                self.with(rhs, $target)
            }
        }
        impl $trait<Expr> for &Expr {
            type Output = Expr;
            fn $method(self, rhs: Expr) -> Expr {
                self.with(&rhs, $target)
            }
        }
        impl $trait<f64> for &Expr {
            type Output = Expr;
            fn $method(self, rhs: f64) -> Expr {
                self.binary($target, self.arg(), Arg::Float(rhs), 0)
            }
        }
        impl $trait<f64> for Expr {
            type Output = Expr;
            fn $method(self, rhs: f64) -> Expr {
                (&self).$method(rhs)
            }
        }
        impl $trait<&Expr> for f64 {
            type Output = Expr;
            fn $method(self, rhs: &Expr) -> Expr {
                rhs.binary($target, Arg::Float(self), rhs.arg(), 0)
            }
        }
        impl $trait<Expr> for f64 {
            type Output = Expr;
            fn $method(self, rhs: Expr) -> Expr {
                self.$method(&rhs)
            }
        }
    )*};
}

binary_ops! {
    Add add "operator.add";
    Sub sub "operator.sub";
    Mul mul "operator.mul";
    Div div "operator.truediv";
}

impl Neg for &Expr {
    type Output = Expr;
    fn neg(self) -> Expr {
        self.function("operator.neg")
    }
}

impl Neg for Expr {
    type Output = Expr;
    fn neg(self) -> Expr {
        -&self
    }
}

/// A checked server-side loss: its name, inputs (`logprobs` first) and graph, compiled for
/// evaluation.
///
/// Upload it with `ServiceClient::create_custom_loss`; it is also a [`CustomLoss`], so the same
/// definition can run on the client through `forward_backward_custom` (protocol.md 11.3: the
/// per-datum losses are summed, `custom/…:sum` metrics summed and `custom/…:mean` averaged over
/// datums, as the server does).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerLoss {
    name: String,
    inputs: Vec<CustomLossInput>,
    nodes: Vec<GraphNode>,
    program: Program,
}

impl ServerLoss {
    /// Checks and compiles a definition: the input rules of
    /// [`CreateCustomLossRequest::validate`], the graph rules of
    /// [`super::graph::check_graph`], and that every node is a supported operation.
    pub fn new(
        name: String,
        inputs: Vec<CustomLossInput>,
        nodes: Vec<GraphNode>,
    ) -> Result<ServerLoss> {
        let graph = CustomLossGraph {
            format: 1,
            nodes: Vec::new(),
        };
        request_parts(String::new(), 0, &name, &inputs, graph).validate()?;
        check_graph(&inputs, &nodes)?;
        let program = Program::compile(&nodes)?;
        Ok(ServerLoss {
            name,
            inputs,
            nodes,
            program,
        })
    }

    /// Decodes and checks an uploaded `create_custom_loss` body (what a server does).
    pub fn from_request(request: &CreateCustomLossRequest) -> Result<ServerLoss> {
        if request.graph.format != 1 {
            return Err(Error::invalid(
                "graph.format",
                format!("format {} is not supported (1 is)", request.graph.format),
            ));
        }
        let nodes = request
            .graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, v)| GraphNode::from_json(v, i))
            .collect::<Result<Vec<_>>>()?;
        ServerLoss::new(request.name.clone(), request.inputs.clone(), nodes)
    }

    /// The loss's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its parameters, `logprobs` first.
    pub fn inputs(&self) -> &[CustomLossInput] {
        &self.inputs
    }

    /// The nodes, in execution order.
    pub fn nodes(&self) -> &[GraphNode] {
        &self.nodes
    }

    /// The wire graph `{"format": 1, "nodes": [...]}`.
    pub fn graph(&self) -> CustomLossGraph {
        CustomLossGraph {
            format: 1,
            nodes: self.nodes.iter().map(GraphNode::to_json).collect(),
        }
    }

    /// The `create_custom_loss` body for a session and its custom-loss counter value.
    pub fn request(&self, session_id: &str, custom_loss_seq_id: u64) -> CreateCustomLossRequest {
        request_parts(
            session_id.to_owned(),
            custom_loss_seq_id,
            &self.name,
            &self.inputs,
            self.graph(),
        )
    }

    /// What identifies the definition within a session (the encoded graph and inputs): creating
    /// a loss with the same key twice returns the first handle.
    pub fn key(&self) -> String {
        serde_json::json!({"inputs": self.inputs, "graph": self.graph()}).to_string()
    }

    /// Evaluates one datum: `logprobs` (shaped like its `target_tokens`) and the other inputs in
    /// declared order. Returns the loss, `∂loss/∂logprobs` and the metrics.
    pub fn evaluate(&self, inputs: &[Tensor]) -> Result<DatumEvaluation> {
        for (i, (t, decl)) in inputs.iter().zip(&self.inputs).enumerate() {
            if t.shape.len() != usize::from(decl.rank) {
                return Err(Error::invalid(
                    format!("custom_loss.inputs[{i}] ({})", decl.name),
                    format!(
                        "declared rank {} but the value has shape {:?}",
                        decl.rank, t.shape
                    ),
                ));
            }
        }
        self.program.evaluate(inputs)
    }

    /// Evaluates datum `at` of a batch from its logprobs (`shape` = its targets' shape) and its
    /// `loss_fn_inputs`.
    pub fn evaluate_datum(
        &self,
        datum: &Datum,
        at: &str,
        logprobs: &[f64],
        shape: &[usize],
    ) -> Result<DatumEvaluation> {
        let mut tensors = vec![Tensor::new(shape.to_vec(), logprobs.to_vec())?];
        for decl in &self.inputs[1..] {
            let loc = format!("{at}.loss_fn_inputs.{}", decl.name);
            let t = datum.loss_fn_inputs.get(&decl.name).ok_or_else(|| {
                Error::invalid(&loc, format!("input of loss `{}` is missing", self.name))
            })?;
            tensors.push(
                Tensor::new(t.shape(), t.to_dense_f64(0.0))
                    .map_err(|e| Error::invalid(&loc, e.to_string()))?,
            );
        }
        self.evaluate(&tensors)
            .map_err(|e| Error::invalid(at, e.to_string()))
    }
}

fn request_parts(
    session_id: String,
    custom_loss_seq_id: u64,
    name: &str,
    inputs: &[CustomLossInput],
    graph: CustomLossGraph,
) -> CreateCustomLossRequest {
    CreateCustomLossRequest {
        session_id,
        custom_loss_seq_id,
        name: name.to_owned(),
        inputs: inputs.to_vec(),
        graph,
        kind: CreateCustomLossTag::default(),
    }
}

/// Sums per-datum metrics the server's way: `:sum` keys add up, `:mean` keys average.
pub fn combine_metrics<'a>(
    per_datum: impl IntoIterator<Item = &'a [(String, f64)]>,
) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for metrics in per_datum {
        for (k, v) in metrics {
            let e = sums.entry(k.clone()).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(k, (sum, n))| {
            let v = if k.ends_with(":mean") {
                sum / n as f64
            } else {
                sum
            };
            (k, v)
        })
        .collect()
}

impl CustomLoss for ServerLoss {
    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput> {
        let data = batch.data().ok_or_else(|| {
            Error::invalid(
                "custom_loss",
                "a server-side loss definition reads the datums' inputs; evaluate it on a batch built with its data",
            )
        })?;
        let mut out = CustomLossOutput::default();
        let mut per_datum = Vec::with_capacity(data.len());
        for (i, datum) in data.iter().enumerate() {
            let shape = datum
                .loss_fn_inputs
                .get("target_tokens")
                .map(|t| t.shape())
                .unwrap_or_else(|| vec![batch.row(i).len()]);
            let e = self.evaluate_datum(datum, &format!("data[{i}]"), batch.row(i), &shape)?;
            out.loss += e.loss;
            out.gradients.push(e.grad_logprobs);
            per_datum.push(e.metrics);
        }
        out.metrics = combine_metrics(per_datum.iter().map(Vec::as_slice));
        Ok(out)
    }
}
