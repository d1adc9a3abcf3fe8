"""Drive the official Tinker Python SDK (tinker==0.38.0) through a full flow against a server.

This is the conformance proof for tinker-rs's local Tinker server: a real client that nobody on
this project wrote must run unmodified against it. Any SDK exception fails the run (exit 1).

Usage: TINKER_BASE_URL=http://127.0.0.1:PORT TINKER_API_KEY=tml-... python official_sdk_flow.py
The server decides the flags (JWT, zstd, retrieve_futures, join_sampling_session); this script
runs the same calls either way.
"""

import math
import os
import pickle
import sys

import tinker
from tinker import types

BASE_MODEL = os.environ.get("CONFORMANCE_BASE_MODEL", "Qwen/Qwen3-8B")


def sft_datum(tokens):
    """A next-token datum: read tokens[:-1], predict tokens[1:], mask the first target."""
    inp, tgt = tokens[:-1], tokens[1:]
    weights = [0.0] + [1.0] * (len(tgt) - 1)
    return types.Datum(
        model_input=types.ModelInput.from_ints(inp),
        loss_fn_inputs={"target_tokens": tgt, "weights": weights},
    )


def rl_datum(tokens, advantage):
    inp, tgt = tokens[:-1], tokens[1:]
    n = len(tgt)
    return types.Datum(
        model_input=types.ModelInput.from_ints(inp),
        loss_fn_inputs={
            "target_tokens": tgt,
            "logprobs": [-1.0] * n,
            "advantages": [advantage] * n,
        },
    )


def mean_nll(out, data):
    total, count = 0.0, 0.0
    for o, d in zip(out.loss_fn_outputs, data):
        lps = o["logprobs"].tolist()
        ws = d.loss_fn_inputs["weights"].tolist()
        total += -sum(lp * w for lp, w in zip(lps, ws))
        count += sum(ws)
    return total / count


def main():
    print("tinker", tinker.__version__)
    service = tinker.ServiceClient(user_metadata={"suite": "conformance"})
    training = service.create_lora_training_client(base_model=BASE_MODEL, rank=8, seed=7).result()
    info = training.get_info()
    print("model", info.model_id, info.lora_rank)

    batch = [sft_datum([1, 2, 3, 4, 5, 6, 7, 8]), sft_datum([10, 11, 12, 13, 14])]

    # Two loss functions, pipelined the way the cookbook does.
    fb = training.forward_backward(batch, "cross_entropy")
    opt = training.optim_step(types.AdamParams(learning_rate=1e-2))
    fb_out = fb.result()
    opt.result()
    assert "loss:sum" in fb_out.metrics, fb_out.metrics
    first_nll = mean_nll(fb_out, batch)
    print("cross_entropy loss:sum", fb_out.metrics["loss:sum"])

    rl = [rl_datum([20, 21, 22, 23], 1.0), rl_datum([30, 31, 32], -0.5)]
    ppo = training.forward_backward(
        rl, "ppo", loss_fn_config={"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}
    ).result()
    print("ppo metrics", ppo.metrics)
    training.optim_step(types.AdamParams(learning_rate=1e-2)).result()

    fwd = training.forward(batch, "cross_entropy").result()
    assert len(fwd.loss_fn_outputs) == len(batch)

    # A 20-step loop whose loss must fall.
    losses = []
    for step in range(20):
        fb = training.forward_backward(batch, "cross_entropy")
        opt = training.optim_step(types.AdamParams(learning_rate=5e-2))
        out = fb.result()
        opt.result()
        losses.append(mean_nll(out, batch))
    print("loss first/last", round(losses[0], 4), round(losses[-1], 4))
    assert losses[-1] < losses[0] * 0.9, f"loss did not fall: {losses}"
    assert losses[0] <= first_nll + 1e-6 or math.isclose(losses[0], first_nll, rel_tol=0.5)

    saved = training.save_state("step-20").result()
    print("save_state", saved.path)
    sampler_path = training.save_weights_for_sampler("s-20").result().path
    print("save_weights_for_sampler", sampler_path)

    sampler = training.save_weights_and_get_sampling_client().result()
    prompt = types.ModelInput.from_ints([1, 2, 3])
    resp = sampler.sample(
        prompt,
        num_samples=2,
        sampling_params=types.SamplingParams(max_tokens=4, temperature=0.7, seed=3),
        include_prompt_logprobs=True,
        topk_prompt_logprobs=2,
    ).result()
    assert len(resp.sequences) == 2
    assert resp.prompt_logprobs is not None and resp.prompt_logprobs[0] is None
    print("sample", [s.tokens for s in resp.sequences], resp.prompt_logprobs)
    lps = sampler.compute_logprobs(prompt).result()
    assert lps[0] is None and all(x is not None and x <= 0 for x in lps[1:]), lps
    print("compute_logprobs", lps)

    clone = pickle.loads(pickle.dumps(sampler))
    clone.sample(prompt, 1, types.SamplingParams(max_tokens=2, seed=5)).result()

    base = service.create_sampling_client(base_model=BASE_MODEL).result()
    base.sample(prompt, 1, types.SamplingParams(max_tokens=2)).result()
    other = service.create_sampling_client(model_path=sampler_path).result()
    other.sample(prompt, 1, types.SamplingParams(max_tokens=2)).result()

    rest = tinker.RestClient()
    runs = rest.list_training_runs(limit=5).result()
    assert any(r.training_run_id == info.model_id for r in runs.training_runs)
    ckpts = rest.list_checkpoints(info.model_id).result()
    names = {c.checkpoint_id for c in ckpts.checkpoints}
    assert "weights/step-20" in names and "sampler_weights/s-20" in names, names
    rest.get_training_run(info.model_id).result()
    caps = service.get_server_capabilities()
    assert caps.supported_models, "server lists no models"
    print("caps", [m.model_name for m in caps.supported_models])
    rest.list_user_checkpoints().result()
    rest.set_checkpoint_ttl_from_tinker_path(saved.path, 7200).result()
    rest.set_checkpoint_ttl_from_tinker_path(saved.path, None).result()
    rest.publish_checkpoint_from_tinker_path(saved.path).result()
    rest.unpublish_checkpoint_from_tinker_path(saved.path).result()
    rest.delete_checkpoint_from_tinker_path(sampler_path).result()
    after = {c.checkpoint_id for c in rest.list_checkpoints(info.model_id).result().checkpoints}
    assert "sampler_weights/s-20" not in after, after
    wi = rest.get_weights_info_by_tinker_path(saved.path).result()
    assert wi.is_lora and wi.lora_rank == 8, wi
    rest.list_sessions().result()

    # Resume with optimizer into a new training client: it holds the saved weights, so its loss
    # on the batch equals the original client's (which has not stepped since the save).
    expected = training.forward(batch, "cross_entropy").result().metrics["loss:sum"]
    resumed = service.create_training_client_from_state_with_optimizer(saved.path).result()
    out = resumed.forward_backward(batch, "cross_entropy").result()
    print("resumed loss:sum", out.metrics["loss:sum"], "original", expected)
    assert math.isclose(out.metrics["loss:sum"], expected, rel_tol=1e-6), (out.metrics, expected)

    service.close("success", "conformance flow done").result()
    print("done")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # any SDK exception fails the run
        print(f"CONFORMANCE FAILURE: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise
