//! Evaluating a loss graph on one datum, with reverse-mode differentiation.
//!
//! A graph is compiled once into a [`Program`]: every node resolved to one of the supported
//! operations (unknown targets are rejected naming the node), then run per datum over `f64`
//! tensors of rank ≤ 2 with PyTorch's broadcasting, and differentiated by walking the nodes
//! backwards. The supported operations are listed in the module documentation of
//! [`crate::losses::server_side`].

use std::collections::BTreeMap;

use super::graph::{output_parts, Arg, GraphNode, NodeOp};
use crate::error::{Error, Result};

/// A dense tensor: row-major values and a shape (`[]` for a scalar).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Values, row-major; as many as the product of `shape`.
    pub values: Vec<f64>,
}

impl Tensor {
    /// A tensor; errors if the value count does not match the shape.
    pub fn new(shape: Vec<usize>, values: Vec<f64>) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != values.len() {
            return Err(Error::invalid(
                "tensor",
                format!("shape {shape:?} holds {n} values, got {}", values.len()),
            ));
        }
        Ok(Tensor { shape, values })
    }

    /// A rank-0 tensor.
    pub fn scalar(v: f64) -> Tensor {
        Tensor {
            shape: Vec::new(),
            values: vec![v],
        }
    }

    fn zeros(shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            values: vec![0.0; shape.iter().product()],
        }
    }
}

/// Elementwise functions of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unary {
    Neg,
    Exp,
    Log,
    Sigmoid,
    LogSigmoid,
    Tanh,
    Abs,
    Sqrt,
    Relu,
    /// `detach()`: the value passes, the gradient stops.
    Detach,
    /// `float()`, `contiguous()`, `clone()`: the value and gradient pass unchanged.
    Identity,
    Clamp(Option<f64>, Option<f64>),
}

/// Elementwise functions of two broadcast operands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

/// One index of a `getitem`, per dimension.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Index {
    At(i64),
    Range(Option<i64>, Option<i64>, Option<i64>),
}

/// An operand: an earlier step's value or a Python number.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Operand {
    Node(usize),
    Number(f64),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Input(usize),
    Unary(Unary, usize),
    Binary(Binary, Operand, Operand),
    /// `sum`/`mean` over everything (`dim` None) or one dimension.
    Reduce {
        mean: bool,
        of: usize,
        dim: Option<i64>,
        keepdim: bool,
    },
    Select(usize, Vec<Index>),
}

/// A compiled loss graph, ready to run per datum.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    steps: Vec<Step>,
    /// Node name of each step, for runtime errors.
    names: Vec<String>,
    inputs: usize,
    loss: usize,
    metrics: Vec<(String, usize)>,
}

/// One datum's evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct DatumEvaluation {
    /// The datum's loss.
    pub loss: f64,
    /// `∂loss/∂logprobs`, laid out like the logprobs input.
    pub grad_logprobs: Vec<f64>,
    /// The graph's metrics (`custom/<name>:sum|mean` → value), in output order.
    pub metrics: Vec<(String, f64)>,
}

fn unsupported(node: &GraphNode) -> Error {
    Error::invalid(
        node.describe(),
        format!(
            "unsupported operation; supported: {}",
            super::SUPPORTED_OPERATIONS
        ),
    )
}

impl Program {
    /// Compiles checked nodes (see [`super::graph::check_graph`]). Errors name the node whose
    /// target or arguments are not supported.
    pub fn compile(nodes: &[GraphNode]) -> Result<Program> {
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        let mut steps = Vec::new();
        let mut names = Vec::new();
        let mut inputs = 0;
        let mut output = None;
        for node in nodes {
            let step = match node.op {
                NodeOp::Placeholder => {
                    inputs += 1;
                    Step::Input(inputs - 1)
                }
                NodeOp::Output => {
                    output = Some(node);
                    continue;
                }
                NodeOp::CallFunction | NodeOp::CallMethod => compile_call(node, &index)?,
                NodeOp::GetAttr | NodeOp::CallModule => return Err(unsupported(node)),
            };
            index.insert(node.name.as_str(), steps.len());
            steps.push(step);
            names.push(node.name.clone());
        }
        let output = output.ok_or_else(|| Error::invalid("graph.nodes", "no output node"))?;
        let (loss, metrics) = output_parts(output)?;
        let at = |name: &str| {
            index
                .get(name)
                .copied()
                .ok_or_else(|| Error::invalid(output.describe(), format!("unknown node `{name}`")))
        };
        Ok(Program {
            loss: at(loss)?,
            metrics: metrics
                .into_iter()
                .map(|(k, r)| Ok((k.to_owned(), at(r)?)))
                .collect::<Result<_>>()?,
            steps,
            names,
            inputs,
        })
    }

    /// Runs the graph on one datum's inputs (`logprobs` first, in declared order) and
    /// back-propagates from the loss to the logprobs.
    pub fn evaluate(&self, inputs: &[Tensor]) -> Result<DatumEvaluation> {
        if inputs.len() != self.inputs {
            return Err(Error::invalid(
                "custom_loss.inputs",
                format!("{} inputs for {} parameters", inputs.len(), self.inputs),
            ));
        }
        let mut values: Vec<Tensor> = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let v = forward(step, &values, inputs)
                .map_err(|e| Error::invalid(format!("node `{}`", self.names[i]), e))?;
            values.push(v);
        }
        let scalar = |i: usize, what: &str| -> Result<f64> {
            match values[i].values.as_slice() {
                [v] => Ok(*v),
                other => Err(Error::invalid(
                    format!("node `{}`", self.names[i]),
                    format!(
                        "the {what} must be a single number, got shape {:?} ({} values)",
                        values[i].shape,
                        other.len()
                    ),
                )),
            }
        };
        let loss = scalar(self.loss, "loss")?;
        let metrics = self
            .metrics
            .iter()
            .map(|(k, i)| Ok((k.clone(), scalar(*i, &format!("metric {k:?}"))?)))
            .collect::<Result<Vec<_>>>()?;

        let mut grads: Vec<Option<Tensor>> = vec![None; self.steps.len()];
        let mut seed = Tensor::zeros(&values[self.loss].shape);
        seed.values[0] = 1.0;
        grads[self.loss] = Some(seed);
        let mut grad_logprobs = vec![0.0; inputs[0].values.len()];
        for i in (0..self.steps.len()).rev() {
            let Some(g) = grads[i].take() else { continue };
            backward(&self.steps[i], &g, &values, &mut grads, &mut grad_logprobs);
        }
        Ok(DatumEvaluation {
            loss,
            grad_logprobs,
            metrics,
        })
    }
}

/// The number behind an argument, if it is a Python number.
fn number(arg: &Arg) -> Option<f64> {
    match arg {
        Arg::Int(i) => Some(*i as f64),
        Arg::Float(f) => Some(*f),
        Arg::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn compile_call(node: &GraphNode, index: &BTreeMap<&str, usize>) -> Result<Step> {
    let bad = |why: &str| Error::invalid(node.describe(), why.to_owned());
    let operand = |arg: &Arg| -> Result<Operand> {
        match arg {
            Arg::Ref(r) => index
                .get(r.as_str())
                .map(|&i| Operand::Node(i))
                .ok_or_else(|| bad(&format!("`{r}` is not a tensor node"))),
            other => number(other)
                .map(Operand::Number)
                .ok_or_else(|| bad("arguments must be tensors or numbers")),
        }
    };
    let tensor = |arg: Option<&Arg>| -> Result<usize> {
        match arg.map(operand).transpose()? {
            Some(Operand::Node(i)) => Ok(i),
            _ => Err(bad("the first argument must be a tensor")),
        }
    };
    let kwarg = |key: &str| node.kwargs.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let only_kwargs = |allowed: &[&str]| -> Result<()> {
        match node
            .kwargs
            .iter()
            .find(|(k, _)| !allowed.contains(&k.as_str()))
        {
            Some((k, _)) => Err(bad(&format!("keyword argument `{k}` is not supported"))),
            None => Ok(()),
        }
    };
    let name = match node.op {
        NodeOp::CallFunction => {
            let t = node.target.as_str();
            t.strip_prefix("torch.nn.functional.")
                .or_else(|| t.strip_prefix("torch.special."))
                .or_else(|| t.strip_prefix("torch."))
                .or_else(|| t.strip_prefix("operator."))
                .or_else(|| t.strip_prefix("math."))
                .ok_or_else(|| unsupported(node))?
        }
        _ => node.target.as_str(),
    };
    let unary = match name {
        "neg" | "negative" => Some(Unary::Neg),
        "exp" => Some(Unary::Exp),
        "log" => Some(Unary::Log),
        "sigmoid" | "expit" => Some(Unary::Sigmoid),
        "logsigmoid" => Some(Unary::LogSigmoid),
        "tanh" => Some(Unary::Tanh),
        "abs" => Some(Unary::Abs),
        "sqrt" => Some(Unary::Sqrt),
        "relu" => Some(Unary::Relu),
        "detach" => Some(Unary::Detach),
        "float" | "contiguous" | "clone" | "pos" => Some(Unary::Identity),
        _ => None,
    };
    if let Some(u) = unary {
        only_kwargs(&[])?;
        if node.args.len() != 1 {
            return Err(bad("takes exactly one tensor argument"));
        }
        return Ok(Step::Unary(u, tensor(node.args.first())?));
    }
    let binary = match name {
        "add" => Some(Binary::Add),
        "sub" | "subtract" => Some(Binary::Sub),
        "mul" | "multiply" => Some(Binary::Mul),
        "truediv" | "div" | "divide" => Some(Binary::Div),
        "pow" => Some(Binary::Pow),
        _ => None,
    };
    if let Some(b) = binary {
        only_kwargs(&[])?;
        let [a, c] = node.args.as_slice() else {
            return Err(bad("takes exactly two arguments"));
        };
        let (a, c) = (operand(a)?, operand(c)?);
        if matches!((a, c), (Operand::Number(_), Operand::Number(_))) {
            return Err(bad("at least one argument must be a tensor"));
        }
        return Ok(Step::Binary(b, a, c));
    }
    match name {
        "clamp" | "clip" => {
            only_kwargs(&["min", "max"])?;
            let bound = |pos: usize, key: &str| -> Result<Option<f64>> {
                match node.args.get(pos).or_else(|| kwarg(key)) {
                    None | Some(Arg::None) => Ok(None),
                    Some(a) => number(a)
                        .map(Some)
                        .ok_or_else(|| bad(&format!("`{key}` must be a number"))),
                }
            };
            if node.args.len() > 3 {
                return Err(bad("takes a tensor, min and max"));
            }
            let (lo, hi) = (bound(1, "min")?, bound(2, "max")?);
            if lo.is_none() && hi.is_none() {
                return Err(bad("give min, max or both"));
            }
            Ok(Step::Unary(
                Unary::Clamp(lo, hi),
                tensor(node.args.first())?,
            ))
        }
        "sum" | "mean" => {
            only_kwargs(&["dim", "keepdim"])?;
            if node.args.len() > 3 {
                return Err(bad("takes a tensor, dim and keepdim"));
            }
            let dim = match node.args.get(1).or_else(|| kwarg("dim")) {
                None | Some(Arg::None) => None,
                Some(Arg::Int(d)) => Some(*d),
                Some(Arg::Tuple(ds) | Arg::List(ds)) if matches!(ds.as_slice(), [Arg::Int(_)]) => {
                    match ds[0] {
                        Arg::Int(d) => Some(d),
                        _ => None,
                    }
                }
                Some(_) => return Err(bad("`dim` must be one integer")),
            };
            let keepdim = match node.args.get(2).or_else(|| kwarg("keepdim")) {
                None => false,
                Some(Arg::Bool(k)) => *k,
                Some(_) => return Err(bad("`keepdim` must be a boolean")),
            };
            Ok(Step::Reduce {
                mean: name == "mean",
                of: tensor(node.args.first())?,
                dim,
                keepdim,
            })
        }
        "getitem" | "__getitem__" => {
            only_kwargs(&[])?;
            let [of, idx] = node.args.as_slice() else {
                return Err(bad("takes a tensor and an index"));
            };
            let one = |a: &Arg| -> Result<Index> {
                let opt = |a: &Arg| match a {
                    Arg::None => Ok(None),
                    Arg::Int(i) => Ok(Some(*i)),
                    _ => Err(bad("slice bounds must be integers")),
                };
                match a {
                    Arg::Int(i) => Ok(Index::At(*i)),
                    Arg::Slice(p) => {
                        let step = opt(&p[2])?;
                        if step.is_some_and(|s| s <= 0) {
                            return Err(bad("slice steps must be positive"));
                        }
                        Ok(Index::Range(opt(&p[0])?, opt(&p[1])?, step))
                    }
                    _ => Err(bad("indices must be integers or slices")),
                }
            };
            let indices = match idx {
                Arg::Tuple(parts) => parts.iter().map(one).collect::<Result<Vec<_>>>()?,
                other => vec![one(other)?],
            };
            Ok(Step::Select(tensor(Some(of))?, indices))
        }
        _ => Err(unsupported(node)),
    }
}

/// Maps each element of a broadcast result of `out` shape to its element of an operand of
/// `shape` (PyTorch rules: shapes align at the right, a dimension of 1 repeats).
fn broadcast_map(out: &[usize], shape: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let offset = out.len() - shape.len();
    (0..n)
        .map(|flat| {
            let mut rest = flat;
            let mut coords = vec![0; out.len()];
            for d in (0..out.len()).rev() {
                coords[d] = rest % out[d];
                rest /= out[d];
            }
            shape.iter().enumerate().fold(0, |acc, (d, &size)| {
                let c = if size == 1 { 0 } else { coords[d + offset] };
                acc * size + c
            })
        })
        .collect()
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> std::result::Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], d: usize| (d + s.len()).checked_sub(rank).map_or(1, |i| s[i]);
    (0..rank)
        .map(|d| match (dim(a, d), dim(b, d)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

fn normalize_dim(dim: i64, rank: usize) -> std::result::Result<usize, String> {
    let r = rank as i64;
    let d = if dim < 0 { dim + r } else { dim };
    if (0..r).contains(&d) {
        Ok(d as usize)
    } else {
        Err(format!("dimension {dim} is out of range for rank {rank}"))
    }
}

/// The reduced shape and, for each input element, its output element.
fn reduce_map(
    shape: &[usize],
    dim: Option<i64>,
    keepdim: bool,
) -> std::result::Result<(Vec<usize>, Vec<usize>, usize), String> {
    let n: usize = shape.iter().product();
    let Some(dim) = dim else {
        let out = if keepdim {
            vec![1; shape.len()]
        } else {
            Vec::new()
        };
        return Ok((out, vec![0; n], n));
    };
    let d = normalize_dim(dim, shape.len().max(1))?;
    if shape.is_empty() {
        return Ok((Vec::new(), vec![0; n], 1));
    }
    let inner: usize = shape[d + 1..].iter().product();
    let size = shape[d];
    let map = (0..n)
        .map(|i| (i / (inner * size)) * inner + i % inner)
        .collect();
    let mut out = shape.to_vec();
    if keepdim {
        out[d] = 1;
    } else {
        out.remove(d);
    }
    Ok((out, map, size))
}

/// The selected shape and, for each output element, its input element.
fn select_map(
    shape: &[usize],
    indices: &[Index],
) -> std::result::Result<(Vec<usize>, Vec<usize>), String> {
    if indices.len() > shape.len() {
        return Err(format!(
            "{} indices for a tensor of rank {}",
            indices.len(),
            shape.len()
        ));
    }
    // Per dimension: the input coordinates kept, and whether the dimension stays.
    let mut picks: Vec<(Vec<usize>, bool)> = Vec::new();
    for (d, &size) in shape.iter().enumerate() {
        let n = size as i64;
        let clamp = |v: i64| if v < 0 { (v + n).max(0) } else { v.min(n) };
        picks.push(match indices.get(d) {
            None => ((0..size).collect(), true),
            Some(Index::At(i)) => {
                let j = if *i < 0 { i + n } else { *i };
                if !(0..n).contains(&j) {
                    return Err(format!("index {i} is out of range for size {size}"));
                }
                (vec![j as usize], false)
            }
            Some(Index::Range(start, stop, step)) => {
                let (a, b) = (clamp(start.unwrap_or(0)), clamp(stop.unwrap_or(n)));
                let s = step.unwrap_or(1) as usize;
                (
                    (a.max(0) as usize..b.max(a) as usize).step_by(s).collect(),
                    true,
                )
            }
        });
    }
    let out_shape: Vec<usize> = picks
        .iter()
        .filter(|(_, keep)| *keep)
        .map(|(p, _)| p.len())
        .collect();
    let mut map = vec![0usize];
    for (d, (p, _)) in picks.iter().enumerate() {
        map = map
            .iter()
            .flat_map(|&base| p.iter().map(move |&c| base * shape[d] + c))
            .collect();
    }
    Ok((out_shape, map))
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn apply_unary(u: Unary, x: f64) -> f64 {
    match u {
        Unary::Neg => -x,
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sigmoid => sigmoid(x),
        // log σ(x) = min(x, 0) − ln(1 + e^{−|x|}), stable for any x.
        Unary::LogSigmoid => x.min(0.0) - (-x.abs()).exp().ln_1p(),
        Unary::Tanh => x.tanh(),
        Unary::Abs => x.abs(),
        Unary::Sqrt => x.sqrt(),
        Unary::Relu => x.max(0.0),
        Unary::Detach | Unary::Identity => x,
        Unary::Clamp(lo, hi) => {
            let x = lo.map_or(x, |l| x.max(l));
            hi.map_or(x, |h| x.min(h))
        }
    }
}

/// `∂y/∂x` at input `x` with output `y` (PyTorch's conventions at kinks: `abs'(0) = 0`,
/// `relu'(0) = 0`, clamp passes the gradient on its closed interval).
fn unary_derivative(u: Unary, x: f64, y: f64) -> f64 {
    match u {
        Unary::Neg => -1.0,
        Unary::Exp => y,
        Unary::Log => 1.0 / x,
        Unary::Sigmoid => y * (1.0 - y),
        Unary::LogSigmoid => sigmoid(-x),
        Unary::Tanh => 1.0 - y * y,
        Unary::Abs => crate::losses::regularizers::sign(x),
        Unary::Sqrt => 0.5 / y,
        Unary::Relu => f64::from(u8::from(x > 0.0)),
        Unary::Detach => 0.0,
        Unary::Identity => 1.0,
        Unary::Clamp(lo, hi) => {
            let inside = lo.is_none_or(|l| x >= l) && hi.is_none_or(|h| x <= h);
            f64::from(u8::from(inside))
        }
    }
}

fn apply_binary(b: Binary, x: f64, y: f64) -> f64 {
    match b {
        Binary::Add => x + y,
        Binary::Sub => x - y,
        Binary::Mul => x * y,
        Binary::Div => x / y,
        Binary::Pow => x.powf(y),
    }
}

/// `(∂z/∂x, ∂z/∂y)` for `z = x ∘ y`.
fn binary_derivatives(b: Binary, x: f64, y: f64, z: f64) -> (f64, f64) {
    match b {
        Binary::Add => (1.0, 1.0),
        Binary::Sub => (1.0, -1.0),
        Binary::Mul => (y, x),
        Binary::Div => (1.0 / y, -x / (y * y)),
        Binary::Pow => {
            let dx = if y == 0.0 { 0.0 } else { y * x.powf(y - 1.0) };
            let dy = if x > 0.0 { z * x.ln() } else { 0.0 };
            (dx, dy)
        }
    }
}

fn operand_tensor<'a>(o: &Operand, values: &'a [Tensor], scratch: &'a Tensor) -> &'a Tensor {
    match o {
        Operand::Node(i) => &values[*i],
        Operand::Number(_) => scratch,
    }
}

fn forward(
    step: &Step,
    values: &[Tensor],
    inputs: &[Tensor],
) -> std::result::Result<Tensor, String> {
    Ok(match step {
        Step::Input(i) => inputs[*i].clone(),
        Step::Unary(u, x) => Tensor {
            shape: values[*x].shape.clone(),
            values: values[*x]
                .values
                .iter()
                .map(|&v| apply_unary(*u, v))
                .collect(),
        },
        Step::Binary(b, x, y) => {
            let (sx, sy) = (number_tensor(x), number_tensor(y));
            let (a, c) = (
                operand_tensor(x, values, &sx),
                operand_tensor(y, values, &sy),
            );
            let shape = broadcast_shape(&a.shape, &c.shape)?;
            let (ma, mc) = (
                broadcast_map(&shape, &a.shape),
                broadcast_map(&shape, &c.shape),
            );
            Tensor {
                values: ma
                    .iter()
                    .zip(&mc)
                    .map(|(&i, &j)| apply_binary(*b, a.values[i], c.values[j]))
                    .collect(),
                shape,
            }
        }
        Step::Reduce {
            mean,
            of,
            dim,
            keepdim,
        } => {
            let x = &values[*of];
            let (shape, map, count) = reduce_map(&x.shape, *dim, *keepdim)?;
            let mut out = Tensor::zeros(&shape);
            for (v, &o) in x.values.iter().zip(&map) {
                out.values[o] += v;
            }
            if *mean {
                out.values.iter_mut().for_each(|v| *v /= count as f64);
            }
            out
        }
        Step::Select(of, indices) => {
            let x = &values[*of];
            let (shape, map) = select_map(&x.shape, indices)?;
            Tensor {
                shape,
                values: map.iter().map(|&i| x.values[i]).collect(),
            }
        }
    })
}

fn number_tensor(o: &Operand) -> Tensor {
    match o {
        Operand::Number(v) => Tensor::scalar(*v),
        Operand::Node(_) => Tensor::scalar(0.0),
    }
}

/// Adds `g` to the gradient of node `to`.
fn accumulate(to: usize, g: Tensor, grads: &mut [Option<Tensor>]) {
    match &mut grads[to] {
        Some(acc) => acc
            .values
            .iter_mut()
            .zip(&g.values)
            .for_each(|(a, b)| *a += b),
        slot => *slot = Some(g),
    }
}

fn backward(
    step: &Step,
    g: &Tensor,
    values: &[Tensor],
    grads: &mut [Option<Tensor>],
    grad_logprobs: &mut [f64],
) {
    match step {
        Step::Input(0) => grad_logprobs
            .iter_mut()
            .zip(&g.values)
            .for_each(|(a, b)| *a += b),
        Step::Input(_) => {}
        Step::Unary(Unary::Detach, _) => {}
        Step::Unary(u, x) => {
            let xv = &values[*x];
            let y: Vec<f64> = xv.values.iter().map(|&v| apply_unary(*u, v)).collect();
            let dx = Tensor {
                shape: xv.shape.clone(),
                values: (0..y.len())
                    .map(|k| g.values[k] * unary_derivative(*u, xv.values[k], y[k]))
                    .collect(),
            };
            accumulate(*x, dx, grads);
        }
        Step::Binary(b, x, y) => {
            let (sx, sy) = (number_tensor(x), number_tensor(y));
            let (a, c) = (
                operand_tensor(x, values, &sx),
                operand_tensor(y, values, &sy),
            );
            let shape = &g.shape;
            let (ma, mc) = (
                broadcast_map(shape, &a.shape),
                broadcast_map(shape, &c.shape),
            );
            let mut da = Tensor::zeros(&a.shape);
            let mut dc = Tensor::zeros(&c.shape);
            for k in 0..g.values.len() {
                let (xa, xc) = (a.values[ma[k]], c.values[mc[k]]);
                let z = apply_binary(*b, xa, xc);
                let (pa, pc) = binary_derivatives(*b, xa, xc, z);
                da.values[ma[k]] += g.values[k] * pa;
                dc.values[mc[k]] += g.values[k] * pc;
            }
            if let Operand::Node(n) = x {
                accumulate(*n, da, grads);
            }
            if let Operand::Node(n) = y {
                accumulate(*n, dc, grads);
            }
        }
        Step::Reduce {
            mean,
            of,
            dim,
            keepdim,
        } => {
            let x = &values[*of];
            let Ok((_, map, count)) = reduce_map(&x.shape, *dim, *keepdim) else {
                return;
            };
            let scale = if *mean { 1.0 / count as f64 } else { 1.0 };
            let dx = Tensor {
                shape: x.shape.clone(),
                values: map.iter().map(|&o| g.values[o] * scale).collect(),
            };
            accumulate(*of, dx, grads);
        }
        Step::Select(of, indices) => {
            let x = &values[*of];
            let Ok((_, map)) = select_map(&x.shape, indices) else {
                return;
            };
            let mut dx = Tensor::zeros(&x.shape);
            for (k, &i) in map.iter().enumerate() {
                dx.values[i] += g.values[k];
            }
            accumulate(*of, dx, grads);
        }
    }
}
