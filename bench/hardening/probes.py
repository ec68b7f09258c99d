#!/usr/bin/env python3
"""Hostile-user probes: each must end with the expected exit code (2, or 0 for a cut pipe and
the capped thread count), print at most one `error:` line (no backtrace, no panic), within
10 s and under 1 GB of memory, and leave its inputs byte for byte.

    python3 bench/hardening/probes.py [--mpq target/release/mpq]

Prints one line per probe (exit code, seconds, peak RSS, the first stderr line) and exits 1
if any probe misses its expectation.
"""

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time


# --- a minimal protobuf writer, enough for small ONNX graphs -------------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, value):
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def onnx_constant_of_shape(dims):
    """x [1, 4] + ConstantOfShape(dims) -> y, opset 17."""
    shape = field(1, 2) + field(2, 7) + b"".join(field(7, d) for d in dims) + field(8, "shape")
    dim = lambda v: field(1, field(1, v))
    tensor_type = field(1, 1) + field(2, dim(1) + dim(4))
    x = field(1, "x") + field(2, field(1, tensor_type))
    node_c = field(1, "shape") + field(2, "c") + field(3, "c") + field(4, "ConstantOfShape")
    node_y = field(1, "x") + field(1, "c") + field(2, "y") + field(3, "y") + field(4, "Add")
    graph = (field(1, node_c) + field(1, node_y) + field(2, "g") + field(5, shape)
             + field(11, x) + field(12, field(1, "y")))
    return field(1, 8) + field(7, graph) + field(8, field(1, "") + field(2, 17))


def onnx_conv(group):
    """x [1, 1, 4, 4] -> Conv(3x3 weight, group) -> Flatten -> y, opset 17."""
    w = (field(1, 1) + field(1, 1) + field(1, 3) + field(1, 3) + field(2, 1)
         + field(4, struct.pack("<9f", *[0.1] * 9)) + field(8, "w"))
    dim = lambda v: field(1, field(1, v))
    tensor_type = field(1, 1) + field(2, dim(1) + dim(1) + dim(4) + dim(4))
    x = field(1, "x") + field(2, field(1, tensor_type))
    attr = field(1, "group") + field(3, group) + field(20, 2)
    node = (field(1, "x") + field(1, "w") + field(2, "c") + field(3, "conv") + field(4, "Conv")
            + field(5, attr))
    flat = field(1, "c") + field(2, "y") + field(3, "flatten") + field(4, "Flatten")
    graph = (field(1, node) + field(1, flat) + field(2, "g") + field(5, w) + field(11, x)
             + field(12, field(1, "y")))
    return field(1, 8) + field(7, graph) + field(8, field(1, "") + field(2, 17))


# --- safetensors metadata surgery ----------------------------------------------------------

def with_meta(src, dst, edit):
    b = open(src, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    meta = json.loads(header["__metadata__"]["mpq"])
    edit(meta)
    header["__metadata__"]["mpq"] = json.dumps(meta)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    open(dst, "wb").write(struct.pack("<Q", len(h)) + h + b[8 + n:])


def nanify(src, dst, name, count):
    b = bytearray(open(src, "rb").read())
    n = struct.unpack("<Q", b[:8])[0]
    t = json.loads(b[8:8 + n])[name]
    s, e = t["data_offsets"]
    for i in range(min(count, (e - s) // 4)):
        at = 8 + n + s + 4 * i
        b[at:at + 4] = struct.pack("<f", float("nan"))
    open(dst, "wb").write(bytes(b))


def digest(paths):
    return {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths if os.path.isfile(p)}


def probe(mpq, work, args, expect, pipe=False, keep=None):
    """Runs one probe; `keep` names the files that must not change (default: every file
    for a probe that must fail, none for one that succeeds)."""
    if keep is None:
        keep = os.listdir(work) if expect != 0 else []
    inputs = [os.path.join(work, f) for f in keep]
    before = digest(inputs)
    cmd = ["/usr/bin/time", "-f", "%M", mpq, *args]
    t0 = time.monotonic()
    if pipe:
        p = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.close()  # the reader goes away at once
        err = p.stderr.read().decode()
        code = p.wait()
    else:
        r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=120)
        err, code = r.stderr, r.returncode
    secs = time.monotonic() - t0
    lines = err.strip().splitlines()
    rss_kb = int(lines.pop()) if lines and lines[-1].isdigit() else -1
    errors = [l for l in lines if l.startswith("error:")]
    ok = (code == expect and len(errors) <= 1 and secs < 10 and 0 < rss_kb < 1024 * 1024
          and not any("panicked" in l or "backtrace" in l.lower() for l in lines)
          and digest(inputs) == before)
    first = errors[0] if errors else (lines[0] if lines else "")
    print(f"{'ok  ' if ok else 'FAIL'} exit {code} (want {expect})  {secs:5.2f} s  "
          f"{rss_kb / 1024:7.1f} MiB  mpq {' '.join(args)}\n       {first[:150]}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mpq", default="target/release/mpq")
    a = ap.parse_args()
    mpq = os.path.abspath(a.mpq)
    work = tempfile.mkdtemp(prefix="mpq-probes-")
    q = lambda *args: subprocess.run([mpq, "--quiet", *args], cwd=work, check=True,
                                      capture_output=True)
    q("train", "--arch", "lenet5", "--data", "mnist10k", "--epochs", "1", "--out", "m.safetensors")
    q("analyze", "--model", "m.safetensors", "--data", "mnist10k", "--max-iter", "8",
      "--out", "s.json")
    q("search", "--model", "m.safetensors", "--method", "ilp", "--sensitivity", "s.json",
      "--avg-bits", "4", "--out", "p.json")
    os.mkdir(os.path.join(work, "D"))
    os.link(os.path.join(work, "m.safetensors"), os.path.join(work, "D", "model.safetensors"))
    nanify(os.path.join(work, "m.safetensors"), os.path.join(work, "nan.safetensors"),
           "conv1.weight", 100)
    with_meta(os.path.join(work, "m.safetensors"), os.path.join(work, "classes.safetensors"),
              lambda m: m["config"].update(classes=10**12))
    with_meta(os.path.join(work, "m.safetensors"), os.path.join(work, "shape.safetensors"),
              lambda m: m["config"].update(input_shape=[3, 100000, 100000]))
    open(os.path.join(work, "cos.onnx"), "wb").write(onnx_constant_of_shape([10**6, 10**6]))
    open(os.path.join(work, "conv1.onnx"), "wb").write(onnx_conv(1))
    open(os.path.join(work, "conv0.onnx"), "wb").write(onnx_conv(0))
    sens = json.load(open(os.path.join(work, "s.json")))
    for row in sens["layers"]:
        for k in ("trace", "trace_per_param", "top_eigenvalue"):
            if row.get(k) is not None:
                row[k] = 1e308
    json.dump(sens, open(os.path.join(work, "big.json"), "w"))
    part = json.load(open(os.path.join(work, "p.json")))
    part["layers"] = part["layers"][:2]
    json.dump(part, open(os.path.join(work, "part.json"), "w"))
    q("quantize", "--model", "m.safetensors", "--policy", "p.json", "--data", "mnist10k",
      "--out", "Q")
    q("search", "--model", "m.safetensors", "--data", "mnist10k", "--method", "haq",
      "--avg-bits", "3", "--episodes", "12", "--out", "h.json")

    haq = ["search", "--model", "m.safetensors", "--data", "mnist10k", "--method", "haq",
           "--avg-bits", "3", "--episodes", "12", "--out", "h.json", "--resume"]
    m = ["--model", "m.safetensors"]
    data = ["--data", "mnist10k"]
    ilp = ["search", *m, "--method", "ilp", "--sensitivity", "s.json", "--avg-bits", "4"]
    ok = probe(mpq, work, haq, 0, keep=["h.haq-state.json", "m.safetensors"])
    probes = [
        (["analyze", *m, *data, "--out", "m.safetensors"], 2),
        ([*ilp, "--out", "m.safetensors"], 2),
        ([*ilp, "--out", "s.json"], 2),
        (["hw", *m, "--hardware", "bitfusion", "--export-csv", "m.safetensors"], 2),
        (["quantize", "--model", "D/model.safetensors", "--policy", "p.json", *data,
          "--out", "D"], 2),
        (["eval", "--model", "nan.safetensors", *data], 2),
        (["eval", "--model", "nan.safetensors", *data, "--policy", "p.json"], 2),
        (["train", "--model", "nan.safetensors", *data, "--epochs", "1", "--out", "t.safetensors"], 2),
        (["search", "--model", "nan.safetensors", *data, "--method", "haq", "--avg-bits", "3",
          "--episodes", "2", "--out", "x.json"], 2),
        (["analyze", "--model", "nan.safetensors", *data, "--metric", "limpq", "--out", "l.json"], 2),
        (["eval", "--model", "classes.safetensors", *data], 2),
        (["info", "--model", "classes.safetensors"], 2),
        (["info", "--model", "shape.safetensors"], 2),
        (["info", "--model", "cos.onnx"], 2),
        (["info", "--model", "conv1.onnx"], 0),
        (["info", "--model", "conv0.onnx"], 2),
        (["eval", "--model", "zoo:lenet5", "--classes", "1000000000", *data], 2),
        (["eval", "--model", "zoo:lenet5", "--data", "synthetic:1x28x28:10:99999999999"], 2),
        (["eval", "--model", "zoo:lenet5", "--data", "synthetic:1x100000x100000:10:2"], 2),
        (["info", "--model", "zoo:lenet5", "--threads", "100000"], 0),
        (["eval", *m, *data, "--threads", "100000"], 0),
        (["search", *m, "--method", "ilp", "--sensitivity", "big.json", "--avg-bits", "4",
          "--out", "x.json"], 2),
        (["eval", *m, *data, "--policy", "part.json"], 2),
        (["eval", "--model", "Q/model.onnx", *data], 0),
    ]
    ok &= all([probe(mpq, work, args, want) for args, want in probes])
    ok &= probe(mpq, work, ["info", "--model", "zoo:resnet20", "--json"], 0, pipe=True)
    ok &= probe(mpq, work, ["eval", *m, *data, "--json"], 0, pipe=True)
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
