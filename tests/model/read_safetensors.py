#!/usr/bin/env python3
"""Interchange test of src/model/checkpoint/safetensors.cc with Python's `safetensors`.

1. nsa_model_tests --gtest_filter=SafetensorsPython.WriteSample writes the sample of
   tests/model/test_safetensors.cc; this script reads it with safetensors.numpy.load_file
   and safe_open and checks every name, dtype, shape, value (bit for bit) and metadata entry.
2. This script writes the same sample with safetensors.numpy.save_file, and
   SafetensorsPython.ReadSampleWrittenByPython reads it back in C++.

Usage: read_safetensors.py --tests <path of nsa_model_tests> --workdir <scratch folder>
Exits non-zero, naming each difference, when anything disagrees.
"""
import argparse
import os
import struct
import subprocess
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

I32, I64 = np.iinfo(np.int32), np.iinfo(np.int64)
QUOTED = 'i64 "quoted" \\ name'

# The same values as Sample in tests/model/test_safetensors.cc.
EXPECTED = {
    "layers.0.f32": np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5], dtype=np.float32).reshape(2, 3),
    "f64": np.array([1.0, 0.5, 1.0 / 3.0, 0.25, -1e300, 5e-324], dtype=np.float64),
    "i32": np.array([I32.min, -1, 0, 1, I32.max, 7], dtype=np.int32).reshape(3, 2),
    QUOTED: np.array([I64.min, -1, 1, I64.max], dtype=np.int64).reshape(2, 1, 2),
    "u8": np.array([0, 1, 127, 128, 254, 255, 42], dtype=np.uint8),
    "scalar": np.array(3.141592653589793, dtype=np.float64),
    "empty": np.zeros((0, 3), dtype=np.float32),
}
METADATA = {
    "plain": "value",
    "escapes": 'quote " backslash \\ slash / newline \n tab \t cr \r ctrl \x01\x1f del \x7f',
    "unicode": "\u00e9t\u00e9 \u20ac \U0001F642",
    "empty": "",
    'key with "quotes"': '{"looks": ["like json"]}',
}


def compare(tensors, metadata, expected, expected_metadata, where):
    """Every difference between what was read and what was expected, as text."""
    problems = []
    if sorted(tensors) != sorted(expected):
        problems.append(f"{where}: names {sorted(tensors)} != {sorted(expected)}")
    for name, want in expected.items():
        if name not in tensors:
            continue
        got = tensors[name]
        if got.dtype != want.dtype:
            problems.append(f"{where}: {name!r} dtype {got.dtype} != {want.dtype}")
        elif got.shape != want.shape:
            problems.append(f"{where}: {name!r} shape {got.shape} != {want.shape}")
        elif got.tobytes() != want.tobytes():  # bit for bit
            problems.append(f"{where}: {name!r} values {got.tolist()} != {want.tolist()}")
    if metadata != expected_metadata:
        problems.append(f"{where}: metadata {metadata!r} != {expected_metadata!r}")
    return problems


def run_gtest(tests, name, env_var, path):
    env = dict(os.environ, **{env_var: path})
    result = subprocess.run([tests, f"--gtest_filter={name}"], env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode != 0 or "[  PASSED  ] 1 test" not in output or "SKIPPED" in output:
        print(output)
        return [f"{name} failed (exit {result.returncode})"]
    return []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", required=True, help="the nsa_model_tests executable")
    parser.add_argument("--workdir", required=True, help="folder for the exchanged files")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)

    # The comparison itself must notice a changed value, dtype, shape, name or metadata.
    for mutate in (
        lambda t, m: t.__setitem__("u8", t["u8"] + np.uint8(1)),
        lambda t, m: t.__setitem__("layers.0.f32", t["layers.0.f32"].astype(np.float64)),
        lambda t, m: t.__setitem__("i32", t["i32"].reshape(2, 3)),
        lambda t, m: t.__setitem__("extra", t["u8"]),
        lambda t, m: m.__setitem__("plain", "other"),
    ):
        tensors, metadata = dict(EXPECTED), dict(METADATA)
        mutate(tensors, metadata)
        if not compare(tensors, metadata, EXPECTED, METADATA, "self-check"):
            sys.exit("read_safetensors.py: the comparison misses a difference (broken test)")

    problems = []

    # C++ writes, Python reads.
    cpp_file = os.path.join(args.workdir, "from_cpp.safetensors")
    if os.path.exists(cpp_file):
        os.remove(cpp_file)
    problems += run_gtest(args.tests, "SafetensorsPython.WriteSample", "NSA_SAFETENSORS_WRITE", cpp_file)
    if not os.path.exists(cpp_file):
        problems.append(f"{cpp_file} was not written")
    else:
        with open(cpp_file, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len % 8:
            problems.append(f"header length {header_len} is not a multiple of 8")
        loaded = load_file(cpp_file)
        with safe_open(cpp_file, framework="np") as f:
            metadata = f.metadata()
            opened = {name: f.get_tensor(name) for name in f.keys()}
        problems += compare(loaded, metadata, EXPECTED, METADATA, "load_file")
        problems += compare(opened, metadata, EXPECTED, METADATA, "safe_open")

    # Python writes, C++ reads.
    py_file = os.path.join(args.workdir, "from_python.safetensors")
    save_file(EXPECTED, py_file, metadata=METADATA)
    problems += run_gtest(args.tests, "SafetensorsPython.ReadSampleWrittenByPython", "NSA_SAFETENSORS_READ", py_file)

    for p in problems:
        print("FAIL", p)
    if problems:
        sys.exit(1)
    print(f"safetensors interchange OK: {len(EXPECTED)} tensors, {len(METADATA)} metadata entries, both ways")


if __name__ == "__main__":
    main()
