//! The builder's encoding against protocol.md, its local checks, the graph rules, and the
//! interpreter's values and gradients (against finite differences).

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::error::Error;
use crate::losses::{evaluate_custom_loss, CustomLoss, LogprobBatch};
use crate::types::{CreateCustomLossRequest, CustomLossInput, Datum, ModelInput, TensorData};

/// The negative log-likelihood of protocol.md 11.4: `−Σ logprobs·weights`.
fn neg_ll() -> ServerLoss {
    let b = ServerLossBuilder::new("neg_ll", 1).unwrap();
    let weights = b.input("weights", 1);
    let loss = -(b.logprobs() * weights).sum();
    b.build(&loss, &[("custom/neg_ll:sum", &loss)]).unwrap()
}

fn location(e: Error) -> String {
    match e {
        Error::InvalidInput { location, message } => format!("{location}: {message}"),
        other => panic!("expected an invalid-input error, got {other:?}"),
    }
}

fn t1(values: &[f64]) -> Tensor {
    Tensor::new(vec![values.len()], values.to_vec()).unwrap()
}

#[test]
fn the_negative_log_likelihood_encodes_exactly_as_protocol_md_shows() {
    // Copied verbatim from protocol.md 11.4 ("generated with the SDK types").
    let expected: Value = serde_json::from_str(
        r#"{"session_id": "s", "custom_loss_seq_id": 0, "name": "neg_ll",
 "inputs": [{"name": "logprobs", "rank": 1}, {"name": "weights", "rank": 1}],
 "graph": {"format": 1, "nodes": [
   {"op": "placeholder", "name": "logprobs", "target": "logprobs", "args": [], "kwargs": {}},
   {"op": "placeholder", "name": "weights", "target": "weights", "args": [], "kwargs": {}},
   {"op": "call_function", "name": "mul", "target": "operator.mul", "args": [{"ref": "logprobs"}, {"ref": "weights"}], "kwargs": {}},
   {"op": "call_method", "name": "sum_1", "target": "sum", "args": [{"ref": "mul"}], "kwargs": {}},
   {"op": "call_function", "name": "neg", "target": "operator.neg", "args": [{"ref": "sum_1"}], "kwargs": {}},
   {"op": "output", "name": "output", "target": "output",
    "args": [{"tuple": [{"ref": "neg"}, {"dict": {"custom/neg_ll:sum": {"ref": "neg"}}}]}], "kwargs": {}}]},
 "type": "create_custom_loss"}"#,
    )
    .unwrap();
    let encoded = serde_json::to_value(neg_ll().request("s", 0)).unwrap();
    assert_eq!(encoded, expected);
    // And a server decoding that body gets the same definition back.
    let request: CreateCustomLossRequest = serde_json::from_value(expected).unwrap();
    assert_eq!(ServerLoss::from_request(&request).unwrap(), neg_ll());
}

#[test]
fn nodes_are_named_the_way_torch_fx_names_them() {
    let b = ServerLossBuilder::new("names", 1).unwrap();
    let lp = b.logprobs();
    let input = b.input("input", 0);
    let a = (&lp * 2.0) * (&lp * &input);
    let loss = (a.abs().sum() + lp.exp().sum()).pow(2.0) / lp.clamp(Some(-5.0), None).mean();
    let def = b.build(&loss, &[]).unwrap();
    let names: Vec<(&str, &str)> = def
        .nodes()
        .iter()
        .map(|n| (n.name.as_str(), n.target.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("logprobs", "logprobs"),
            ("input_1", "input"),
            ("mul", "operator.mul"),
            ("mul_1", "operator.mul"),
            ("mul_2", "operator.mul"),
            ("abs_1", "torch.abs"),
            ("sum_1", "sum"),
            ("exp", "torch.exp"),
            ("sum_2", "sum"),
            ("add", "operator.add"),
            ("pow_1", "operator.pow"),
            ("clamp", "torch.clamp"),
            ("mean", "mean"),
            ("truediv", "operator.truediv"),
            ("output", "output"),
        ]
    );
    let clamp = def.nodes().iter().find(|n| n.name == "clamp").unwrap();
    assert_eq!(clamp.to_json()["kwargs"], json!({"min": -5.0}));
    let scaled = def.nodes().iter().find(|n| n.name == "mul").unwrap();
    assert_eq!(scaled.to_json()["args"], json!([{"ref": "logprobs"}, 2.0]));
}

#[test]
fn arguments_round_trip_through_their_json_encoding() {
    let args = vec![
        Arg::None,
        Arg::Bool(true),
        Arg::Int(-3),
        Arg::Float(0.5),
        Arg::Float(f64::INFINITY),
        Arg::Float(f64::NEG_INFINITY),
        Arg::Str("x".into()),
        Arg::List(vec![Arg::Int(1), Arg::Float(2.5)]),
        Arg::Ref("mul".into()),
        Arg::Tuple(vec![Arg::Ellipsis, Arg::Int(0)]),
        Arg::Dict(vec![("k".into(), Arg::Ref("neg".into()))]),
        Arg::Slice(Box::new([Arg::Int(1), Arg::None, Arg::Int(2)])),
        Arg::Dtype("float32".into()),
        Arg::Device("cpu".into()),
        Arg::Layout("strided".into()),
        Arg::MemoryFormat("contiguous_format".into()),
    ];
    for arg in &args {
        assert_eq!(&Arg::from_json(&arg.to_json(), "a").unwrap(), arg);
    }
    assert_eq!(Arg::Float(f64::INFINITY).to_json(), json!({"float": "inf"}));
    assert_eq!(
        Arg::Slice(Box::new([Arg::Int(1), Arg::None, Arg::None])).to_json(),
        json!({"slice": [1, null, null]})
    );
    let nan = Arg::from_json(&json!({"float": "nan"}), "a").unwrap();
    assert!(matches!(nan, Arg::Float(f) if f.is_nan()));
    assert_eq!(Arg::from_json(&json!(2.0), "a").unwrap(), Arg::Float(2.0));
    let bad = Arg::from_json(&json!({"ref": "a", "tuple": []}), "graph.nodes[2].args[0]");
    assert!(location(bad.unwrap_err()).starts_with("graph.nodes[2].args[0]"));
    assert!(Arg::from_json(&json!({"float": "huge"}), "a").is_err());
    assert!(Arg::from_json(&json!({"module": "x"}), "a").is_err());
}

#[test]
fn the_builder_enforces_the_sdk_rules_before_anything_is_sent() {
    assert!(location(ServerLossBuilder::new("x", 3).unwrap_err()).contains("rank 1 or 2"));
    assert!(location(ServerLossBuilder::new("x", 0).unwrap_err()).contains("rank 1 or 2"));
    assert!(ServerLossBuilder::new("", 1).is_err());

    let build_with_input = |name: &str, rank: u8| {
        let b = ServerLossBuilder::new("x", 1).unwrap();
        let v = b.input(name, rank);
        let loss = (b.logprobs().sum() + v.sum()).neg_for_test();
        b.build(&loss, &[])
    };
    assert!(build_with_input("weights", 2).is_ok());
    assert!(build_with_input("w2_", 0).is_ok());
    for bad in ["Weights", "2w", "w-x", "", &"a".repeat(65), "logprobs"] {
        let e = location(build_with_input(bad, 1).unwrap_err());
        assert!(e.starts_with("create_custom_loss.inputs[1]"), "{bad}: {e}");
    }
    assert!(location(build_with_input("w", 3).unwrap_err()).contains("rank must be 0, 1 or 2"));

    let b = ServerLossBuilder::new("x", 1).unwrap();
    let mut loss = b.logprobs().sum();
    for i in 0..16 {
        loss = loss + b.input(&format!("in_{i}"), 0);
    }
    assert!(location(b.build(&loss, &[]).unwrap_err()).contains("at most 16 inputs, got 17"));

    let b = ServerLossBuilder::new("x", 1).unwrap();
    let per_token = -b.logprobs();
    let e = location(b.build(&per_token, &[]).unwrap_err());
    assert!(e.contains("must be a scalar (rank 0)"), "{e}");

    for key in [
        "neg",
        "custom/Neg:sum",
        "custom/a:max",
        "custom/:sum",
        "custom/a b:sum",
    ] {
        let b = ServerLossBuilder::new("x", 1).unwrap();
        let loss = b.logprobs().sum();
        let e = location(b.build(&loss, &[(key, &loss)]).unwrap_err());
        assert!(e.contains("metric names are custom/<name>"), "{key}: {e}");
    }
    assert!(is_metric_key("custom/a.b/c-d_0:mean"));
    assert!(!is_metric_key(&format!("custom/{}:sum", "a".repeat(65))));

    let b = ServerLossBuilder::new("x", 1).unwrap();
    let per_token = b.logprobs();
    let loss = per_token.sum();
    let e = location(b.build(&loss, &[("custom/v:sum", &per_token)]).unwrap_err());
    assert!(e.contains("metrics must be scalars"), "{e}");

    let b = ServerLossBuilder::new("x", 1).unwrap();
    let other = ServerLossBuilder::new("y", 1).unwrap();
    let mixed = (b.logprobs() * other.logprobs()).sum();
    assert!(location(b.build(&mixed, &[]).unwrap_err()).contains("different builders"));

    let b = ServerLossBuilder::new("x", 1).unwrap();
    let s = b.logprobs().sum();
    let loss = s.index(0);
    assert!(location(b.build(&loss, &[]).unwrap_err()).contains("is a scalar"));
}

/// `-x` as a method, so the closure above reads left to right.
trait NegForTest {
    fn neg_for_test(self) -> Expr;
}
impl NegForTest for Expr {
    fn neg_for_test(self) -> Expr {
        -self
    }
}

fn node(op: NodeOp, name: &str, target: &str, args: Vec<Arg>) -> GraphNode {
    GraphNode {
        op,
        name: name.into(),
        target: target.into(),
        args,
        kwargs: Vec::new(),
    }
}

fn lp_input() -> Vec<CustomLossInput> {
    vec![CustomLossInput {
        name: "logprobs".into(),
        rank: 1,
    }]
}

fn output(loss: &str) -> GraphNode {
    node(
        NodeOp::Output,
        "output",
        "output",
        vec![Arg::Tuple(vec![
            Arg::Ref(loss.into()),
            Arg::Dict(Vec::new()),
        ])],
    )
}

#[test]
fn graphs_breaking_the_rules_are_rejected_naming_the_node() {
    let placeholder = node(NodeOp::Placeholder, "logprobs", "logprobs", Vec::new());
    let check = |middle: GraphNode| {
        let name = middle.name.clone();
        let nodes = vec![placeholder.clone(), middle, output(&name)];
        ServerLoss::new("x".into(), lp_input(), nodes).map(|_| ())
    };
    let lp = || vec![Arg::Ref("logprobs".into())];
    let cases = [
        (
            node(NodeOp::GetAttr, "w", "weight", Vec::new()),
            "captures a tensor",
        ),
        (
            node(NodeOp::CallModule, "m", "linear", lp()),
            "may not call modules",
        ),
        (
            node(NodeOp::CallMethod, "item", "item", lp()),
            "`item` is not allowed",
        ),
        (
            node(NodeOp::CallFunction, "f", "numpy.exp", lp()),
            "only torch, math and operator",
        ),
        (
            node(NodeOp::CallFunction, "e", "torch.erf", lp()),
            "unsupported operation",
        ),
        (
            node(
                NodeOp::CallFunction,
                "s",
                "torch.exp",
                vec![Arg::Ref("later".into())],
            ),
            "not an earlier node",
        ),
        (
            node(NodeOp::CallFunction, "logprobs", "torch.exp", lp()),
            "used twice",
        ),
        (
            node(NodeOp::CallFunction, "c", "torch.clamp", lp()),
            "give min, max or both",
        ),
        (
            node(
                NodeOp::CallMethod,
                "s",
                "sum",
                vec![Arg::Ref("logprobs".into()), Arg::Float(0.5)],
            ),
            "`dim` must be one integer",
        ),
    ];
    for (middle, want) in cases {
        let described = middle.describe();
        let e = location(check(middle).unwrap_err());
        assert!(e.contains(want), "{described}: {e}");
        assert!(e.contains(&described) || want == "used twice", "{e}");
    }
    // Parameters must be the declared inputs, first; the output must exist and come last.
    let e =
        location(ServerLoss::new("x".into(), lp_input(), vec![output("logprobs")]).unwrap_err());
    assert!(e.contains("must be the declared inputs"), "{e}");
    let e =
        location(ServerLoss::new("x".into(), lp_input(), vec![placeholder.clone()]).unwrap_err());
    assert!(e.contains("no output node"), "{e}");
    let bad_output = node(
        NodeOp::Output,
        "output",
        "output",
        vec![Arg::Ref("logprobs".into())],
    );
    let e = location(
        ServerLoss::new("x".into(), lp_input(), vec![placeholder, bad_output]).unwrap_err(),
    );
    assert!(e.contains("(loss, {"), "{e}");
}

#[test]
fn a_non_scalar_loss_from_a_foreign_graph_fails_at_evaluation_naming_the_node() {
    let nodes = vec![
        node(NodeOp::Placeholder, "logprobs", "logprobs", Vec::new()),
        node(
            NodeOp::CallFunction,
            "neg",
            "operator.neg",
            vec![Arg::Ref("logprobs".into())],
        ),
        output("neg"),
    ];
    let def = ServerLoss::new("x".into(), lp_input(), nodes).unwrap();
    let e = location(def.evaluate(&[t1(&[1.0, 2.0])]).unwrap_err());
    assert!(
        e.starts_with("node `neg`") && e.contains("single number"),
        "{e}"
    );
    let e = location(def.evaluate(&[Tensor::scalar(1.0)]).unwrap_err());
    assert!(e.contains("declared rank 1"), "{e}");
}

#[test]
fn the_negative_log_likelihood_evaluates_to_its_value_and_gradient() {
    let out = neg_ll()
        .evaluate(&[t1(&[-1.0, -2.0, -0.5]), t1(&[1.0, 0.0, 2.0])])
        .unwrap();
    assert_eq!(out.loss, 2.0);
    assert_eq!(out.grad_logprobs, vec![-1.0, 0.0, -2.0]);
    assert_eq!(out.metrics, vec![("custom/neg_ll:sum".to_string(), 2.0)]);
}

/// A datum with `targets.len()` targets and the given float inputs.
fn datum(targets: &[i64], inputs: &[(&str, TensorData)]) -> Datum {
    let mut d = Datum::new(ModelInput::from_tokens(vec![1; targets.len()]))
        .with_input("target_tokens", TensorData::from_i64(targets.to_vec()));
    for (k, v) in inputs {
        d = d.with_input(*k, v.clone());
    }
    d
}

#[test]
fn as_a_client_side_loss_it_sums_datums_and_combines_metrics_like_the_server() {
    let b = ServerLossBuilder::new("mixed", 1).unwrap();
    let w = b.input("weights", 1);
    let loss = -(b.logprobs() * &w).sum();
    let count = w.sum();
    let def = b
        .build(
            &loss,
            &[("custom/nll:sum", &loss), ("custom/w:mean", &count)],
        )
        .unwrap();
    let data = vec![
        datum(
            &[1, 2],
            &[("weights", TensorData::from_f32(vec![1.0, 1.0]))],
        ),
        datum(&[3], &[("weights", TensorData::from_f32(vec![4.0]))]),
    ];
    let rows = vec![vec![-1.0, -3.0], vec![-0.5]];
    let out = evaluate_custom_loss(&def, &LogprobBatch::with_data(&data, &rows).unwrap()).unwrap();
    assert_eq!(out.loss, 6.0);
    assert_eq!(out.gradients, vec![vec![-1.0, -1.0], vec![-4.0]]);
    assert_eq!(out.metrics["custom/nll:sum"], 6.0);
    assert_eq!(out.metrics["custom/w:mean"], 3.0);
    let e = location(def.compute(&LogprobBatch::new(&rows).unwrap()).unwrap_err());
    assert!(e.contains("built with its data"), "{e}");
    let missing = vec![datum(&[1], &[])];
    let e = location(
        def.compute(&LogprobBatch::with_data(&missing, &[vec![-1.0]]).unwrap())
            .unwrap_err(),
    );
    assert!(
        e.starts_with("data[0]") && e.contains("loss_fn_inputs.weights"),
        "{e}"
    );
}

#[test]
fn a_handle_checks_its_session_and_the_datums_ranks() {
    let handle = CustomLossHandle::uploaded("loss-1".into(), "s1".into(), Arc::new(neg_ll()));
    assert!(handle.check_session(Some("s1")).is_ok());
    assert!(
        location(handle.check_session(Some("s2")).unwrap_err()).contains("created in session s1")
    );
    assert!(handle.check_session(None).is_err());
    assert_eq!(
        serde_json::to_value(handle.loss_fn_config()).unwrap(),
        json!({"loss_id": "loss-1"})
    );
    let local = CustomLossHandle::client_side("s1".into(), Arc::new(neg_ll()));
    assert_eq!((local.loss_id(), local.loss_fn_config()), (None, None));
    let good = datum(
        &[1, 2],
        &[("weights", TensorData::from_f32(vec![1.0, 1.0]))],
    );
    assert!(handle.check_data(std::slice::from_ref(&good)).is_ok());
    assert!(location(handle.check_data(&[]).unwrap_err()).contains("No data provided"));
    let e = location(
        handle
            .check_data(&[good.clone(), datum(&[1], &[])])
            .unwrap_err(),
    );
    assert!(
        e.starts_with("data[1].loss_fn_inputs.weights: missing"),
        "{e}"
    );
    let matrix = TensorData::from_f32(vec![1.0; 4])
        .with_shape(vec![2, 2])
        .unwrap();
    let e = location(
        handle
            .check_data(&[datum(&[1, 2], &[("weights", matrix)])])
            .unwrap_err(),
    );
    assert!(e.contains("has rank 2") && e.contains("with rank 1"), "{e}");
    let mut no_targets = good;
    no_targets.loss_fn_inputs.remove("target_tokens");
    let e = location(handle.check_data(&[no_targets]).unwrap_err());
    assert!(e.starts_with("data[0].loss_fn_inputs.target_tokens"), "{e}");
}

// ----------------------------------------------------------------- gradients

/// Central-difference check of `∂loss/∂logprobs` for a loss over logprobs `lp` (rank 1) and a
/// second rank-1 input `w`.
fn check_gradient(
    def: &ServerLoss,
    lp: &[f64],
    w: &[f64],
) -> std::result::Result<(), TestCaseError> {
    let eval = |lp: &[f64]| def.evaluate(&[t1(lp), t1(w)]).unwrap();
    let out = eval(lp);
    const H: f64 = 1e-6;
    for j in 0..lp.len() {
        let mut up = lp.to_vec();
        let mut down = lp.to_vec();
        up[j] += H;
        down[j] -= H;
        let numeric = (eval(&up).loss - eval(&down).loss) / (2.0 * H);
        let analytic = out.grad_logprobs[j];
        let tolerance = 1e-5 * (1.0 + analytic.abs().max(numeric.abs()));
        prop_assert!(
            (numeric - analytic).abs() <= tolerance,
            "d/dlp[{j}]: numeric {numeric}, analytic {analytic} (lp {lp:?}, w {w:?})"
        );
    }
    Ok(())
}

/// One loss per supported operation, each reaching the logprobs through that operation and
/// reduced to a scalar; the inputs avoid kinks (abs at 0, clamp bounds, relu at 0).
fn per_operation_losses() -> Vec<(&'static str, ServerLoss)> {
    type Body = fn(&Expr, &Expr) -> Expr;
    let bodies: Vec<(&str, Body)> = vec![
        ("add", |lp, w| (lp + w).pow(2.0).sum()),
        ("add scalar", |lp, _| (1.5 + lp).pow(2.0).sum()),
        ("sub", |lp, w| (lp - w).pow(2.0).sum()),
        ("rsub scalar", |lp, _| (2.0 - lp).pow(3.0).sum()),
        ("mul", |lp, w| (lp * w).sum()),
        ("div", |lp, w| {
            (lp / (w.abs() + 0.5)).sum() + (w / (lp - 3.0)).sum()
        }),
        ("rdiv scalar", |lp, _| (1.0 / (lp - 2.0)).sum()),
        ("neg", |lp, w| (-lp * w).sum()),
        ("pow", |lp, _| (-lp + 2.0).pow(2.5).sum()),
        ("exp", |lp, w| (lp.exp() * w).sum()),
        ("log", |lp, _| (-lp + 0.1).log().sum()),
        ("sigmoid", |lp, w| (lp * w).sigmoid().sum()),
        ("logsigmoid", |lp, w| (lp * w).logsigmoid().sum()),
        ("tanh", |lp, w| (lp + w).tanh().sum()),
        ("abs", |lp, w| (lp * w).abs().sum()),
        ("sqrt", |lp, _| (-lp + 0.1).sqrt().sum()),
        ("relu", |lp, w| (lp + w).relu().sum()),
        ("clamp", |lp, w| (lp * w).clamp(Some(-1.0), Some(0.5)).sum()),
        ("mean", |lp, w| (lp * w).mean() * 3.0),
        ("sum_dim", |lp, w| (lp * w).sum_dim(0) * 2.0),
        ("mean_dim", |lp, _| lp.mean_dim(-1)),
        ("index", |lp, w| lp.index(1) * w.index(-1)),
        ("slice", |lp, w| {
            (lp.slice(Some(1), None) * 2.0).sum() + lp.slice(None, Some(2)).exp().sum() * w.mean()
        }),
        ("broadcast scalar input", |lp, w| (lp * w.sum()).sum()),
    ];
    bodies
        .into_iter()
        .map(|(name, body)| {
            let b = ServerLossBuilder::new("op", 1).unwrap();
            let w = b.input("w", 1);
            let loss = body(&b.logprobs(), &w);
            (
                name,
                b.build(&loss, &[])
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
            )
        })
        .collect()
}

/// Values away from every kink the checked operations have (|x| ≥ 0.05 from 0 and the clamp
/// bounds after multiplying by a weight in ±[0.2, 2]).
fn away_from_kinks(lp: &[f64], w: &[f64]) -> bool {
    lp.iter().zip(w).all(|(&l, &w)| {
        let p = l * w;
        [p, p + 1.0, p - 0.5, l + w].iter().all(|v| v.abs() > 0.05)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_operation_differentiates_like_finite_differences(
        lp in prop::collection::vec(-3.0f64..-0.05, 3..6),
        w in prop::collection::vec(prop_oneof![0.2f64..2.0, -2.0f64..-0.2], 6),
    ) {
        let w = &w[..lp.len()];
        prop_assume!(away_from_kinks(&lp, w));
        for (name, def) in per_operation_losses() {
            check_gradient(&def, &lp, w).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        }
    }
}

#[test]
fn rank_two_logprobs_broadcast_against_rank_one_and_reduce_per_dimension() {
    // logprobs (2, 3) · weights (3): PyTorch aligns the trailing dimension.
    let b = ServerLossBuilder::new("topk", 2).unwrap();
    let w = b.input("w", 1);
    let rows = (b.logprobs() * &w).sum_dim(1); // (2,)
    let loss = (rows.exp() * b.logprobs().index(0).sum()).sum() + b.logprobs().mean_dim(0).sum();
    let def = b.build(&loss, &[]).unwrap();
    let lp = Tensor::new(vec![2, 3], vec![-0.1, -0.2, -0.3, -0.4, -0.5, -0.6]).unwrap();
    let w = t1(&[1.0, 0.5, 2.0]);
    let eval = |v: &[f64]| {
        def.evaluate(&[Tensor::new(vec![2, 3], v.to_vec()).unwrap(), w.clone()])
            .unwrap()
    };
    let out = eval(&lp.values);
    for j in 0..6 {
        let (mut up, mut down) = (lp.values.clone(), lp.values.clone());
        up[j] += 1e-6;
        down[j] -= 1e-6;
        let numeric = (eval(&up).loss - eval(&down).loss) / 2e-6;
        assert!(
            (numeric - out.grad_logprobs[j]).abs() < 1e-6,
            "{j}: {numeric} vs {:?}",
            out.grad_logprobs
        );
    }
    // Direct value: rows = [−0.1−0.1−0.6, −0.4−0.25−1.2] = [−0.8, −1.85]; index(0).sum() = −0.6;
    // column means sum to −1.05.
    let want = ((-0.8f64).exp() + (-1.85f64).exp()) * -0.6 - 1.05;
    assert!((out.loss - want).abs() < 1e-12, "{} vs {want}", out.loss);
    // Shapes that do not broadcast fail naming the node.
    let e = location(def.evaluate(&[lp, t1(&[1.0, 2.0])]).unwrap_err());
    assert!(
        e.starts_with("node `mul`") && e.contains("do not broadcast"),
        "{e}"
    );
}

#[test]
fn logsigmoid_stays_finite_where_the_naive_formula_overflows() {
    let b = ServerLossBuilder::new("dpo_like", 1).unwrap();
    let loss = -(b.logprobs() * 1000.0).logsigmoid().sum();
    let def = b.build(&loss, &[]).unwrap();
    let out = def.evaluate(&[t1(&[-1.0, 1.0])]).unwrap();
    assert!((out.loss - 1000.0).abs() < 1e-9, "{}", out.loss);
    assert!((out.grad_logprobs[0] + 1000.0).abs() < 1e-9);
    assert!(out.grad_logprobs[1].abs() < 1e-9);
}

#[test]
fn detach_passes_the_value_and_stops_the_gradient() {
    // loss = Σ lp · sg(lp · w): the value uses both factors, the gradient only the first.
    let b = ServerLossBuilder::new("detached", 1).unwrap();
    let w = b.input("w", 1);
    let lp = b.logprobs();
    let loss = (&lp * (&lp * &w).detach()).sum();
    let def = b.build(&loss, &[]).unwrap();
    let out = def.evaluate(&[t1(&[-1.0, -2.0]), t1(&[3.0, 0.5])]).unwrap();
    assert_eq!(out.loss, 3.0 + 2.0);
    assert_eq!(out.grad_logprobs, vec![-3.0, -1.0]);
}
