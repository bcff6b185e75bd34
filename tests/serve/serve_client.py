"""Shared by the serve tests run from Python: a tiny checkpoint trained by `nsa train`, and
an `nsa serve` process on a free port with the official OpenAI client pointed at it."""
import argparse
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families


def train_tiny(nsa, work):
    text = os.path.join(work, "text.txt")
    with open(text, "w") as f:
        for i in range(300):
            f.write(f"  {i} And the word {(i * 37) % 101} was spoken unto them, and they heard it.\n")
    out = os.path.join(work, "model")
    subprocess.run([nsa, "train", "--d-model", "32", "--layers", "2", "--heads", "2", "--kv-heads", "1",
                    "--dk", "16", "--dv", "16", "--mlp-hidden", "64", "--block-len", "8", "--stride", "4",
                    "--sel-block", "16", "--top-n", "3", "--window", "32", "--token-shift", "1",
                    "--data", text, "--batch", "2", "--seq", "128", "--steps", "4", "--warmup", "1",
                    "--eval-every", "4", "--eval-batches", "1", "--threads", "1", "--attention", "nsa",
                    "--out", out], check=True, capture_output=True)
    return os.path.join(out, "checkpoint.safetensors")


class Server:
    def __init__(self, nsa, ckpt, state):
        self.proc = subprocess.Popen([nsa, "serve", ckpt, "--port", "0", "--state-dir", state, "--context", "8192"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on"):
            raise RuntimeError("nsa serve did not start: " + line + self.proc.stderr.read())
        self.base = "http://" + line.split()[-1]
        self.client = openai.OpenAI(base_url=self.base + "/v1", api_key="unused", max_retries=0)

    def get(self, path):
        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self):
        status, text = self.get("/metrics")
        assert status == 200
        return {s.name + json.dumps(s.labels, sort_keys=True): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)


def check(cond, what):
    """A named assertion that prints what passed."""
    if not cond:
        raise AssertionError(what)
    print("ok  ", what)


def test_arguments(extra=()):
    """--nsa (the binary), --workdir, and the extra optional flags named in `extra`."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--nsa", required=True)
    ap.add_argument("--workdir", required=True)
    for flag in extra:
        ap.add_argument(flag)
    return ap.parse_args()
