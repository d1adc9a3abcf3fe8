//! The node list of a server-side custom loss (protocol.md 11.4) as typed values, their JSON
//! encoding, and the structural rules the SDK checks before uploading.

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};
use crate::types::CustomLossInput;

/// The `op` of a node (torch.fx's opcodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeOp {
    /// A parameter of the loss function (`target` = its name).
    Placeholder,
    /// A module attribute: a captured tensor, which the rules forbid.
    GetAttr,
    /// A free function (`target` = a qualified name such as `torch.exp`).
    CallFunction,
    /// A tensor method (`target` = the method name, the receiver is `args[0]`).
    CallMethod,
    /// A submodule call, which the rules forbid.
    CallModule,
    /// The return value: `args[0]` = `(loss, {metrics})`.
    Output,
}

impl NodeOp {
    const ALL: [NodeOp; 6] = [
        NodeOp::Placeholder,
        NodeOp::GetAttr,
        NodeOp::CallFunction,
        NodeOp::CallMethod,
        NodeOp::CallModule,
        NodeOp::Output,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeOp::Placeholder => "placeholder",
            NodeOp::GetAttr => "get_attr",
            NodeOp::CallFunction => "call_function",
            NodeOp::CallMethod => "call_method",
            NodeOp::CallModule => "call_module",
            NodeOp::Output => "output",
        }
    }
}

/// One argument of a node, in the encoding of protocol.md 11.4.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// `null` (Python `None`).
    None,
    /// A boolean.
    Bool(bool),
    /// An integer (a JSON number without fraction).
    Int(i64),
    /// A float; finite values are JSON numbers, others `{"float": "inf" | "-inf" | "nan"}`.
    Float(f64),
    /// A string.
    Str(String),
    /// A Python list: a JSON list.
    List(Vec<Arg>),
    /// `{"ref": name}`: the value of an earlier node.
    Ref(String),
    /// `{"tuple": [...]}`.
    Tuple(Vec<Arg>),
    /// `{"dict": {...}}` (keys in insertion order).
    Dict(Vec<(String, Arg)>),
    /// `{"slice": [start, stop, step]}`.
    Slice(Box<[Arg; 3]>),
    /// `{"ellipsis": true}`.
    Ellipsis,
    /// `{"dtype": "float32"}`.
    Dtype(String),
    /// `{"device": "cpu"}`.
    Device(String),
    /// `{"layout": "strided"}`.
    Layout(String),
    /// `{"memory_format": "contiguous_format"}`.
    MemoryFormat(String),
}

impl Arg {
    /// The JSON form.
    pub fn to_json(&self) -> Value {
        let tagged = |tag: &str, v: Value| Value::Object(Map::from_iter([(tag.to_owned(), v)]));
        let list = |items: &[Arg]| Value::Array(items.iter().map(Arg::to_json).collect());
        match self {
            Arg::None => Value::Null,
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Int(i) => Value::from(*i),
            Arg::Float(f) => match Number::from_f64(*f) {
                Some(n) => Value::Number(n),
                None => tagged("float", Value::from(python_float_name(*f))),
            },
            Arg::Str(s) => Value::from(s.as_str()),
            Arg::List(items) => list(items),
            Arg::Ref(name) => tagged("ref", Value::from(name.as_str())),
            Arg::Tuple(items) => tagged("tuple", list(items)),
            Arg::Dict(entries) => tagged(
                "dict",
                Value::Object(
                    entries
                        .iter()
                        .map(|(k, v)| (k.clone(), v.to_json()))
                        .collect(),
                ),
            ),
            Arg::Slice(parts) => tagged("slice", list(parts.as_slice())),
            Arg::Ellipsis => tagged("ellipsis", Value::Bool(true)),
            Arg::Dtype(s) => tagged("dtype", Value::from(s.as_str())),
            Arg::Device(s) => tagged("device", Value::from(s.as_str())),
            Arg::Layout(s) => tagged("layout", Value::from(s.as_str())),
            Arg::MemoryFormat(s) => tagged("memory_format", Value::from(s.as_str())),
        }
    }

    /// Decodes the JSON form; `at` names the argument in errors.
    pub fn from_json(value: &Value, at: &str) -> Result<Arg> {
        let bad = |why: String| Error::invalid(at, why);
        Ok(match value {
            Value::Null => Arg::None,
            Value::Bool(b) => Arg::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Arg::Int(i),
                None => Arg::Float(
                    n.as_f64()
                        .ok_or_else(|| bad(format!("number {n} is out of range")))?,
                ),
            },
            Value::String(s) => Arg::Str(s.clone()),
            Value::Array(items) => Arg::List(decode_list(items, at)?),
            Value::Object(map) => {
                let mut entries = map.iter();
                let (Some((tag, inner)), None) = (entries.next(), entries.next()) else {
                    return Err(bad(format!(
                        "an encoded object has exactly one key, got {}",
                        map.len()
                    )));
                };
                let text = || {
                    inner
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad(format!("`{tag}` takes a string")))
                };
                let items = || match inner {
                    Value::Array(items) => decode_list(items, &format!("{at}.{tag}")),
                    _ => Err(bad(format!("`{tag}` takes a list"))),
                };
                match tag.as_str() {
                    "ref" => Arg::Ref(text()?),
                    "tuple" => Arg::Tuple(items()?),
                    "dict" => {
                        let Value::Object(m) = inner else {
                            return Err(bad("`dict` takes an object".into()));
                        };
                        Arg::Dict(
                            m.iter()
                                .map(|(k, v)| {
                                    Ok((k.clone(), Arg::from_json(v, &format!("{at}.dict.{k}"))?))
                                })
                                .collect::<Result<_>>()?,
                        )
                    }
                    "slice" => {
                        let parts: [Arg; 3] = items()?
                            .try_into()
                            .map_err(|_| bad("`slice` takes [start, stop, step]".into()))?;
                        Arg::Slice(Box::new(parts))
                    }
                    "ellipsis" => Arg::Ellipsis,
                    "float" => Arg::Float(match text()?.as_str() {
                        "inf" => f64::INFINITY,
                        "-inf" => f64::NEG_INFINITY,
                        "nan" => f64::NAN,
                        other => {
                            return Err(bad(format!(
                                "`float` is \"inf\", \"-inf\" or \"nan\", got {other:?}"
                            )))
                        }
                    }),
                    "dtype" => Arg::Dtype(text()?),
                    "device" => Arg::Device(text()?),
                    "layout" => Arg::Layout(text()?),
                    "memory_format" => Arg::MemoryFormat(text()?),
                    other => return Err(bad(format!("unknown argument encoding `{other}`"))),
                }
            }
        })
    }

    /// Every node name this argument refers to, depth first.
    fn refs<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Arg::Ref(name) => out.push(name),
            Arg::List(items) | Arg::Tuple(items) => items.iter().for_each(|a| a.refs(out)),
            Arg::Dict(entries) => entries.iter().for_each(|(_, a)| a.refs(out)),
            Arg::Slice(parts) => parts.iter().for_each(|a| a.refs(out)),
            _ => {}
        }
    }
}

fn decode_list(items: &[Value], at: &str) -> Result<Vec<Arg>> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| Arg::from_json(v, &format!("{at}[{i}]")))
        .collect()
}

fn python_float_name(f: f64) -> &'static str {
    if f.is_nan() {
        "nan"
    } else if f > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphNode {
    /// What the node does.
    pub op: NodeOp,
    /// Its unique name (what `{"ref": …}` arguments point at).
    pub name: String,
    /// Parameter name, qualified function name, method name, or `"output"`.
    pub target: String,
    /// Positional arguments.
    pub args: Vec<Arg>,
    /// Keyword arguments, in insertion order.
    pub kwargs: Vec<(String, Arg)>,
}

impl GraphNode {
    /// The JSON form (`{"op", "name", "target", "args", "kwargs"}`).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "op": self.op.as_str(),
            "name": self.name,
            "target": self.target,
            "args": self.args.iter().map(Arg::to_json).collect::<Vec<_>>(),
            "kwargs": self.kwargs.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<Map<_, _>>(),
        })
    }

    /// Decodes `graph.nodes[index]`.
    pub fn from_json(value: &Value, index: usize) -> Result<GraphNode> {
        let at = format!("graph.nodes[{index}]");
        let field = |key: &str| {
            value
                .get(key)
                .ok_or_else(|| Error::invalid(format!("{at}.{key}"), "missing"))
        };
        let text = |key: &str| {
            field(key)?
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Error::invalid(format!("{at}.{key}"), "must be a string"))
        };
        let op_name = text("op")?;
        let op = NodeOp::ALL
            .into_iter()
            .find(|o| o.as_str() == op_name)
            .ok_or_else(|| Error::invalid(format!("{at}.op"), format!("unknown op {op_name:?}")))?;
        let args = match value.get("args") {
            None => Vec::new(),
            Some(Value::Array(items)) => decode_list(items, &format!("{at}.args"))?,
            Some(_) => return Err(Error::invalid(format!("{at}.args"), "must be a list")),
        };
        let kwargs = match value.get("kwargs") {
            None => Vec::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| Ok((k.clone(), Arg::from_json(v, &format!("{at}.kwargs.{k}"))?)))
                .collect::<Result<_>>()?,
            Some(_) => return Err(Error::invalid(format!("{at}.kwargs"), "must be an object")),
        };
        Ok(GraphNode {
            op,
            name: text("name")?,
            target: text("target")?,
            args,
            kwargs,
        })
    }

    /// `node `name` (op target)`, for error messages.
    pub fn describe(&self) -> String {
        format!(
            "node `{}` ({} {})",
            self.name,
            self.op.as_str(),
            self.target
        )
    }
}

/// Tensor methods the SDK refuses to trace (they leave the graph or the autograd tape).
const FORBIDDEN_METHODS: [&str; 4] = ["item", "numpy", "tolist", "backward"];
/// Modules whose functions a graph may call.
const ALLOWED_MODULES: [&str; 3] = ["torch.", "math.", "operator."];

/// Whether `key` is a metric name a loss may report: `custom/<name>:sum|mean` with `<name>` in
/// `[a-z0-9_./-]{1,64}`.
pub fn is_metric_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("custom/") else {
        return false;
    };
    let Some((name, reduction)) = rest.rsplit_once(':') else {
        return false;
    };
    matches!(reduction, "sum" | "mean")
        && (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_./-".contains(&b))
}

/// The output node's `(loss, {metrics})`: the loss node's name and the metrics in order.
pub(crate) fn output_parts(node: &GraphNode) -> Result<(&str, Vec<(&str, &str)>)> {
    let at = node.describe();
    let shape_error = || {
        Error::invalid(
            &at,
            "the loss must return (loss, {\"custom/<name>:sum|mean\": value, ...}) with tensor values",
        )
    };
    let [Arg::Tuple(parts)] = node.args.as_slice() else {
        return Err(shape_error());
    };
    let [Arg::Ref(loss), Arg::Dict(metrics)] = parts.as_slice() else {
        return Err(shape_error());
    };
    let metrics = metrics
        .iter()
        .map(|(key, value)| match value {
            Arg::Ref(r) if is_metric_key(key) => Ok((key.as_str(), r.as_str())),
            Arg::Ref(_) => Err(Error::invalid(
                format!("{at}: metric {key:?}"),
                "metric names are custom/<name>:sum or custom/<name>:mean with <name> in [a-z0-9_./-]{1,64}",
            )),
            _ => Err(shape_error()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((loss, metrics))
}

/// Checks a graph against its inputs (protocol.md 11.4): placeholders are exactly the inputs in
/// order and come first; names are unique; every reference points at an earlier node; functions
/// come from `torch`, `math` or `operator`; no modules, captured tensors or forbidden methods;
/// one output node, last, returning `(loss, {metrics})` with valid metric names. The input list
/// itself is checked by [`crate::types::CreateCustomLossRequest::validate`].
pub fn check_graph(inputs: &[CustomLossInput], nodes: &[GraphNode]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    let placeholders = nodes
        .iter()
        .take_while(|n| n.op == NodeOp::Placeholder)
        .count();
    let params: Vec<&str> = nodes[..placeholders]
        .iter()
        .map(|n| n.target.as_str())
        .collect();
    let declared: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    if params != declared {
        return Err(Error::invalid(
            "graph.nodes",
            format!("the graph's parameters {params:?} must be the declared inputs {declared:?}, in order, before any other node"),
        ));
    }
    for (i, node) in nodes.iter().enumerate() {
        let at = || format!("graph.nodes[{i}]: {}", node.describe());
        if !seen.insert(node.name.as_str()) {
            return Err(Error::invalid(at(), "the node name is used twice"));
        }
        let mut refs = Vec::new();
        node.args.iter().for_each(|a| a.refs(&mut refs));
        node.kwargs.iter().for_each(|(_, a)| a.refs(&mut refs));
        if let Some(r) = refs.iter().find(|r| !seen.contains(*r) || **r == node.name) {
            return Err(Error::invalid(
                at(),
                format!("refers to `{r}`, which is not an earlier node"),
            ));
        }
        match node.op {
            NodeOp::Placeholder if i >= placeholders => {
                return Err(Error::invalid(
                    at(),
                    "parameters come before every other node",
                ))
            }
            NodeOp::GetAttr => {
                return Err(Error::invalid(
                    at(),
                    "the loss captures a tensor; pass it as an input instead",
                ))
            }
            NodeOp::CallModule => return Err(Error::invalid(at(), "a loss may not call modules")),
            NodeOp::CallFunction if !ALLOWED_MODULES.iter().any(|m| node.target.starts_with(m)) => {
                return Err(Error::invalid(
                    at(),
                    "only torch, math and operator functions may be called",
                ))
            }
            NodeOp::CallMethod if FORBIDDEN_METHODS.contains(&node.target.as_str()) => {
                return Err(Error::invalid(
                    at(),
                    format!("tensor method `{}` is not allowed in a loss", node.target),
                ))
            }
            NodeOp::Output if i + 1 != nodes.len() => {
                return Err(Error::invalid(at(), "the output node must be the last"))
            }
            _ => {}
        }
    }
    match nodes.last() {
        Some(last) if last.op == NodeOp::Output => output_parts(last).map(|_| ()),
        _ => Err(Error::invalid(
            "graph.nodes",
            "the graph has no output node (the loss must return (loss, metrics))",
        )),
    }
}
