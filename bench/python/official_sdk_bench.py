"""The Python half of bench/run.sh: the official SDK (tinker==0.38.0) on the same inputs as
`tinker-bench`, one JSON line per result on stdout ({"sdk": "python", "workload", "size", ...}).

    official_sdk_bench.py b1
    official_sdk_bench.py b2 --bodies DIR      (bodies written by `tinker-bench dump DIR`)
    official_sdk_bench.py sse
    official_sdk_bench.py fanout --calls N --samples S --max-tokens T --url URL
    official_sdk_bench.py poll --url URL

Stages follow shared/spec/python-anchors.md: inputs built before timing, one warm-up call, then
timed calls (gc.collect() before each); memory = peak RSS growth of one call (VmHWM reset through
/proc/self/clear_refs after malloc_trim).
"""

import argparse
import asyncio
import ctypes
import gc
import json
import os
import resource
import sys
import time
import urllib.request
from types import SimpleNamespace

import numpy as np

import tinker
from tinker import types
from tinker.lib.chunked_fwdbwd_helpers import combine_fwd_bwd_output_results
from tinker.lib.public_interfaces.training_client import TrainingClient
from tinker.proto.request_conv import forward_backward_request_to_proto
from tinker.proto.response_conv import deserialize_proto_response

VOCAB = 151936
BASE_MODEL = "Qwen/Qwen3-8B"
B1_SIZES = [(128, 512), (128, 2048), (2048, 450), (256, 16384)]

_libc = ctypes.CDLL("libc.so.6")


def emit(workload, size, **fields):
    print(json.dumps({"sdk": "python", "workload": workload, "size": size, **fields}), flush=True)


# ------------------------------------------------------------------ measurement


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def rss_mb():
    return _status_kib("VmRSS:") * 1024 / 1e6


def peak_rss_mb():
    return _status_kib("VmHWM:") * 1024 / 1e6


def reset_peak_rss():
    _libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rss_growth(fn):
    gc.collect()
    reset_peak_rss()
    before = rss_mb()
    out = fn()
    peak = peak_rss_mb()
    del out
    return max(0.0, peak - before)


def time_calls(fn, min_runs=5, max_runs=25, budget=2.0):
    fn()
    samples = []
    cpu = []
    start = time.perf_counter()
    while len(samples) < min_runs or (len(samples) < max_runs and time.perf_counter() - start < budget):
        gc.collect()
        c = time.process_time()
        t = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        del out

    def median(xs):
        xs = sorted(xs)
        n = len(xs)
        return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2

    return {"median_s": median(samples), "min_s": min(samples), "max_s": max(samples), "runs": len(samples),
            "cpu_median_s": median(cpu)}


def process_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------ workloads (python-anchors.md)

M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(k):
    with np.errstate(over="ignore"):
        z = np.asarray(k, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def u(s, i):
    k = np.uint64(s << 40) + np.asarray(i, dtype=np.uint64)
    return ((splitmix64(k) >> np.uint64(40)).astype(np.float64) / float(1 << 24)).astype(np.float32)


def batch(kind, B, L):
    P = L // 4
    idx = np.arange(B * (L + 1), dtype=np.uint64)
    toks = (splitmix64(np.uint64(1 << 40) + idx) % np.uint64(VOCAB)).astype(np.int64).reshape(B, L + 1)
    pos = np.arange(L)
    data = []
    if kind == "RL":
        lp_all = (-8 * u(2, np.arange(B * L, dtype=np.uint64))).reshape(B, L)
        adv_all = 2 * u(3, np.arange(B, dtype=np.uint64)) - 1
    for b in range(B):
        t = toks[b]
        inputs = {"target_tokens": types.TensorData(data=t[1:].tolist(), dtype="int64", shape=[L])}
        if kind == "SFT":
            w = np.where(pos < P, 0.0, 1.0).astype(np.float32)
            inputs["weights"] = types.TensorData(data=w.tolist(), dtype="float32", shape=[L])
        else:
            lp = np.where(pos < P, np.float32(0.0), lp_all[b]).astype(np.float32)
            adv = np.where(pos < P, np.float32(0.0), adv_all[b]).astype(np.float32)
            inputs["logprobs"] = types.TensorData(data=lp.tolist(), dtype="float32", shape=[L])
            inputs["advantages"] = types.TensorData(data=adv.tolist(), dtype="float32", shape=[L])
        data.append(types.Datum(model_input=types.ModelInput.from_ints(t[:L].tolist()), loss_fn_inputs=inputs))
    return data


# ------------------------------------------------------------------ B1 encode

# `_chunked_requests_generator` only reads `self.holder._client_config`: the default client config
# (1024 datums, 5,000,000 estimated bytes per chunk), as the Rust side uses.
_CHUNKER = SimpleNamespace(holder=SimpleNamespace(_client_config=types.ClientConfigResponse()))


def encode_call(data, loss, use_zstd):
    """The SDK's path from the datums to the bodies: chunking (default client config), a
    ForwardBackwardRequest per chunk, request_conv, SerializeToString, and zstd level 3 with a
    new compressor per chunk (resources/training.py) when compression is on."""
    import zstandard

    bodies = []
    for i, chunk in enumerate(TrainingClient._chunked_requests_generator(_CHUNKER, data)):
        request = types.ForwardBackwardRequest(
            forward_backward_input=types.ForwardBackwardInput(data=chunk.data, loss_fn=loss, loss_fn_config=None),
            model_id="bench-session:train:0",
            seq_id=i + 1,
        )
        msg = forward_backward_request_to_proto(request)
        msg.forward_only = False
        body = msg.SerializeToString()
        if use_zstd:
            body = zstandard.ZstdCompressor().compress(body)
        bodies.append(body)
    return bodies


def b1():
    for kind, loss in (("SFT", "cross_entropy"), ("RL", "importance_sampling")):
        for B, L in B1_SIZES:
            data = batch(kind, B, L)
            plain = encode_call(data, loss, False)
            proto_bytes = sum(map(len, plain))
            chunks = len(plain)
            del plain
            big = B * L > 10_000_000
            for use_zstd in (False, True):
                wire = sum(map(len, encode_call(data, loss, use_zstd)))
                mem = rss_growth(lambda: encode_call(data, loss, use_zstd))
                t = time_calls(lambda: encode_call(data, loss, use_zstd), 5, 12 if big else 25)
                name = f"B1 encode + zstd {kind}" if use_zstd else f"B1 encode {kind}"
                emit(name, f"{B}x{L}", mem_mb=mem, proto_bytes=proto_bytes, chunks=chunks, wire_bytes=wire,
                     notes=f"{chunks} chunk(s); {proto_bytes / 1e6:.2f} MB proto, {wire / 1e6:.2f} MB on the wire", **t)
            del data
            gc.collect()


# ------------------------------------------------------------------ B2 decode


def b2(bodies_dir):
    def read(name):
        with open(os.path.join(bodies_dir, name), "rb") as f:
            return f.read()

    for B, L in ((2048, 450), (4096, 4096)):
        body = read(f"fbo_{B}x{L}.pb")
        out = deserialize_proto_response(body, types.ForwardBackwardOutput)
        assert len(out.loss_fn_outputs) == B
        del out
        mem = rss_growth(lambda: deserialize_proto_response(body, types.ForwardBackwardOutput))
        t = time_calls(lambda: deserialize_proto_response(body, types.ForwardBackwardOutput), 5, 16 if B * L > 10_000_000 else 25)
        emit("B2 decode ForwardBackwardOutput", f"{B}x{L}", mem_mb=mem, notes=f"1 body of {len(body) / 1e6:.2f} MB", **t)
        del body
        gc.collect()

    chunk_bodies = [read(f"fbo_chunk_{i:02}.pb") for i in range(54)]

    def decode_all():
        return combine_fwd_bwd_output_results(
            [deserialize_proto_response(b, types.ForwardBackwardOutput) for b in chunk_bodies])

    assert len(decode_all().loss_fn_outputs) == 4096
    mem = rss_growth(decode_all)
    t = time_calls(decode_all)
    emit("B2 decode per-chunk + combine", "4096x4096", mem_mb=mem, **t)
    del chunk_bodies
    gc.collect()

    body = read("sample_2048x256.pb")
    check = deserialize_proto_response(body, types.SampleResponse)
    assert len(check.sequences) == 2048 and len(check.sequences[2047].tokens) == 256
    del check
    decode = lambda: deserialize_proto_response(body, types.SampleResponse)  # noqa: E731
    mem = rss_growth(decode)
    t = time_calls(decode)
    emit("B2 decode SampleResponse", "2048x256", mem_mb=mem, **t)

    def decode_and_read():
        r = deserialize_proto_response(body, types.SampleResponse)
        token_sum = 0
        logprob_sum = 0.0
        for seq in r.sequences:
            token_sum += sum(seq.tokens)
            logprob_sum += sum(seq.logprobs or [])
        return token_sum, logprob_sum, r

    mem = rss_growth(decode_and_read)
    t = time_calls(decode_and_read)
    emit("B2 decode SampleResponse + read tokens/logprobs", "2048x256", mem_mb=mem,
         notes="lists built lazily by the SDK on first access", **t)


# ------------------------------------------------------------------ SSE


def sse():
    from tinker._streaming import SSEDecoder

    event = b'data: {"token": 123, "logprob": -0.5}\n\n'
    stream = event * 2_564_102
    chunks = [stream[i:i + 16384] for i in range(0, len(stream), 16384)]

    async def agen():
        for c in chunks:
            yield c

    async def count():
        n = 0
        async for _ in SSEDecoder().aiter_bytes(agen()):
            n += 1
        return n

    run = lambda: asyncio.run(count())  # noqa: E731
    assert run() == 2_564_102
    t = time_calls(run, 1, 2, budget=1.0)  # ~6 s a call (python-anchors.md): 1-2 timed calls
    emit("B8 SSE decode", "100 MB", mb_per_s=len(stream) / 1e6 / t["median_s"],
         notes="SSEDecoder().aiter_bytes (AsyncStream path), 16 KiB chunks", **t)


# ------------------------------------------------------------------ B3 fan-out, B4 polling


def _service(url):
    return tinker.ServiceClient(base_url=url, api_key="tml-bench-key")


def _prompt(i):
    return types.ModelInput.from_ints([(i % 200) + 1, (i % 7) + 2, 3])


def fanout(url, calls, samples, max_tokens):
    params = types.SamplingParams(max_tokens=max_tokens)

    async def main():
        service = _service(url)
        sampler = await service.create_sampling_client(base_model=BASE_MODEL)
        await sampler.sample(_prompt(0), 1, params)
        gc.collect()
        reset_peak_rss()
        rss_before = rss_mb()
        cpu = process_cpu()
        start = time.perf_counter()
        results = await asyncio.gather(
            *[sampler.sample(_prompt(i), samples, params) for i in range(calls)], return_exceptions=True)
        wall = time.perf_counter() - start
        cpu = process_cpu() - cpu
        failures = [r for r in results if isinstance(r, BaseException) or len(r.sequences) != samples]
        emit("B3 sample fan-out (asyncio)", f"{calls}x{samples}", cpu_ms_per_1k=cpu * 1e3 / calls * 1e3,
             wall_s=wall, peak_rss_mb=peak_rss_mb(), rss_before_mb=rss_before, failures=len(failures),
             first_error=repr(failures[0]) if failures else None, max_tokens=max_tokens,
             notes="asyncio.gather(sampler.sample(...))")

    asyncio.run(main())


def add_fault(url, rule):
    req = urllib.request.Request(url + "/_admin/faults", data=json.dumps(rule).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req).read()


def poll(url):
    cases = [(f"try_again x{k}", {"endpoint": "retrieve_future", "count": k, "fault": {"kind": "try_again"}} if k else None)
             for k in (0, 5, 50)]
    cases.append(("30 s 503 burst", {"endpoint": "retrieve_future", "duration_ms": 30000,
                                     "fault": {"kind": "status", "status": 503}}))
    params = types.SamplingParams(max_tokens=4)
    prompt = types.ModelInput.from_ints([1, 2, 3])

    async def main():
        service = _service(url)
        sampler = await service.create_sampling_client(base_model=BASE_MODEL)
        await sampler.sample(prompt, 1, params)
        for name, rule in cases:
            if rule:
                add_fault(url, rule)
            cpu = process_cpu()
            start = time.perf_counter()
            error = None
            try:
                await sampler.sample(prompt, 1, params)
            except Exception as e:  # noqa: BLE001 - reported, not hidden
                error = repr(e)
            emit("B4 poll one future", name, wall_s=time.perf_counter() - start, cpu_s=process_cpu() - cpu,
                 failures=int(error is not None), first_error=error)

    asyncio.run(main())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["b1", "b2", "sse", "fanout", "poll"])
    p.add_argument("--bodies")
    p.add_argument("--url")
    p.add_argument("--calls", type=int, default=64)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=16)
    a = p.parse_args()
    if a.what == "b1":
        b1()
    elif a.what == "b2":
        b2(a.bodies)
    elif a.what == "sse":
        sse()
    elif a.what == "fanout":
        fanout(a.url, a.calls, a.samples, a.max_tokens)
    else:
        poll(a.url)


if __name__ == "__main__":
    sys.exit(main())
