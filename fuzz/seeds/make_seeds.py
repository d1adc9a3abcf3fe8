"""Writes the committed seed inputs of the fuzz targets (fuzz/seeds/<target>/): every JSON reply
of the reference captures, small protobuf results of both schemas, SSE streams, reply sequences
for the retry decisions, tinker paths, and byte strings that steer the call-machine check into
each of its modes. Run with the venv of tests/conformance (it has the SDK's protobuf module):

    target/conformance-venv/bin/python fuzz/seeds/make_seeds.py
"""

import glob
import hashlib
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CAPTURES = os.path.join(HERE, "..", "..", "..", "shared", "spec", "captures")


def write(target, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


def main():
    seen = set()
    for path in sorted(glob.glob(os.path.join(CAPTURES, "*.jsonl"))):
        for line in open(path):
            ex = json.loads(line)
            body = ex.get("resp_body")
            if body is None:
                continue
            data = json.dumps(body, separators=(",", ":")).encode()
            if data not in seen and len(data) < 4096:
                seen.add(data)
                write("json_responses", data)

    from tinker.proto import tinker_public_pb2 as pb

    r = pb.SampleResponse()
    for s in range(3):
        seq = r.sequences.add()
        seq.tokens = struct.pack("<3i", 1 + s, 2, 3)
        seq.logprobs = struct.pack("<3f", -0.5, -1.0, -1.5)
        seq.stop_reason = 1 + s % 2
    write("proto_decode", r.SerializeToString())
    o = pb.ForwardBackwardOutput()
    o.loss_fn_output_type = "CrossEntropyLossReturn"
    rec = o.loss_fn_outputs.add()
    rec.type_tag = "CrossEntropyLossReturn"
    rec.num_datums = 2
    t = rec.fields["logprobs"]
    t.data = struct.pack("<5f", -1, -2, -3, -4, -5)
    t.offsets = struct.pack("<3q", 0, 8, 20)
    t.dtype = 1
    o.metrics["loss:sum"] = 3.0
    write("proto_decode", o.SerializeToString())

    for stream in (b'data: {"token": 1}\n\n', b"event: token\nid: 7\ndata: a\ndata: b\n\n: comment\nretry: 10\n\n",
                   b"data: x\r\n\r\ndata: y\rdata: z\n\n"):
        write("sse_decode", bytes([3]) + stream)

    for path in (b"tinker://run-1:train:0/weights/step-20", b"tinker://run-1:train:0/sampler_weights/s-20",
                 b"tinker://abc/weights/x/y"):
        write("tinker_path", path)

    # tag, draw, [status bytes], header count, (name, len, value)*, body len, body
    write("response_classification", bytes([10, 128, 1, 0, 3]) + b"1.5" + bytes([0]))  # 429 + retry-after
    write("response_classification", bytes([13, 7, 0, 0, 0x81, 3, 1, 3, 5, 3]) + b"\x00\x01\x02")  # 503, transport, 200
    write("response_classification", bytes([1, 0, 0, 0, 2, 0, 2, 0]))  # empty 400s

    write("call_machines", bytes([0]) + bytes(range(1, 40)))  # a seeded simulation
    write("call_machines", bytes([1, 0, 20]) + bytes(8) + bytes([5, 3, 0, 0, 5, 0, 0, 6]))  # fb, scripted replies
    write("call_machines", bytes([1, 2, 50]) + bytes(8) + bytes([5, 0, 0, 1, 5, 0, 10, 2]))  # sample, 410s


if __name__ == "__main__":
    main()
