"""Load on `nsa serve` from an asyncio client (the official AsyncOpenAI): C concurrent
conversations x N turns, each turn resending the whole history (the official client's way,
so the server's automatic prefix reuse is what keeps it cheap). Reports errors, lost turns,
time to first token (p50 / p99), tokens/s, and the server's own metrics afterwards; then,
on one conversation, the time to first token of a turn against the history before it
(it should follow the new tokens, not the history).

    python bench/serve/load.py --nsa build/tools/nsa/nsa --checkpoint CKPT \
        [--conversations 32] [--turns 50] [--max-tokens 16] [--json OUT]
"""
import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import openai


def start_server(nsa, ckpt, state, context, threads):
    proc = subprocess.Popen([nsa, "serve", ckpt, "--port", "0", "--state-dir", state, "--context", str(context),
                             "--max-resident", "64", "--max-active", "64", "--threads", str(threads)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on"):
        raise RuntimeError("nsa serve did not start: " + line + proc.stderr.read())
    return proc, "http://" + line.split()[-1]


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def conversation(client, model, index, turns, max_tokens, out):
    messages = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Tell me of verse {index}:{turn}."})
        start = time.perf_counter()
        first = None
        text = ""
        try:
            stream = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                          temperature=0.8, seed=index * 1000 + turn, stream=True,
                                                          stream_options={"include_usage": True})
            usage = None
            async for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage
                for ch in chunk.choices:
                    if ch.delta.content:
                        if first is None:
                            first = time.perf_counter() - start
                        text += ch.delta.content
            out["ttft"].append(first if first is not None else time.perf_counter() - start)
            out["tokens"] += usage.completion_tokens
            out["cached"] += usage.prompt_tokens_details.cached_tokens
            out["prompt"] += usage.prompt_tokens
            out["turns"] += 1
        except Exception as e:  # counted, reported
            out["errors"].append(repr(e))
        messages.append({"role": "assistant", "content": text})


async def run_load(base, conversations, turns, max_tokens):
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=600)
    model = (await client.models.list()).data[0].id
    out = {"ttft": [], "tokens": 0, "cached": 0, "prompt": 0, "turns": 0, "errors": []}
    start = time.perf_counter()
    await asyncio.gather(*(conversation(client, model, i, turns, max_tokens, out) for i in range(conversations)))
    out["seconds"] = time.perf_counter() - start
    return out


def ttft_against_history(base, lengths, new_text, max_tokens):
    """One conversation (explicit id): grow its history to each length, then time a turn of
    `new_text` (median of 3)."""
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=600)
    model = client.models.list().data[0].id
    rows = []
    filler = "And the LORD spake unto Moses, saying, "
    have = 0
    for n in lengths:
        while have < n:
            chunk = min(2000, n - have)
            client.completions.create(model=model, prompt=(filler * (chunk // len(filler) + 1))[:chunk], max_tokens=1,
                                      extra_body={"conversation": "ttft"})
            have += chunk + 1
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            stream = client.completions.create(model=model, prompt=new_text, max_tokens=max_tokens, stream=True,
                                               extra_body={"conversation": "ttft"})
            first = None
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].text:
                    first = time.perf_counter() - t0
            times.append(first)
            have += len(new_text) + max_tokens
        rows.append({"history": have, "ttft_ms": 1e3 * statistics.median(times)})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nsa", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--conversations", type=int, default=32)
    ap.add_argument("--turns", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--history", default="1000,4000,16000", help="TTFT against these history lengths (0: skip)")
    ap.add_argument("--json")
    a = ap.parse_args()
    state = tempfile.mkdtemp(prefix="nsa_load_")
    proc, base = start_server(a.nsa, a.checkpoint, state, 32768, a.threads)
    try:
        r = asyncio.run(run_load(base, a.conversations, a.turns, a.max_tokens))
        with urllib.request.urlopen(base + "/metrics") as m:
            metrics = m.read().decode()
        lost = a.conversations * a.turns - r["turns"] - len(r["errors"])
        summary = {
            "conversations": a.conversations, "turns_each": a.turns, "max_tokens": a.max_tokens,
            "turns_done": r["turns"], "errors": len(r["errors"]), "lost": lost,
            "ttft_p50_ms": 1e3 * percentile(r["ttft"], 50), "ttft_p99_ms": 1e3 * percentile(r["ttft"], 99),
            "tokens_per_s": r["tokens"] / r["seconds"], "seconds": r["seconds"],
            "prompt_tokens": r["prompt"], "cached_prompt_tokens": r["cached"],
        }
        for line in metrics.splitlines():
            if line.startswith(("nsa_step_batch_size_sum", "nsa_decode_steps_total", "nsa_step_tokens_read_sum",
                                "nsa_step_dense_tokens_sum", "nsa_step_tokens_read_count")):
                k, v = line.split()
                summary[k] = float(v)
        if summary.get("nsa_decode_steps_total"):
            summary["mean_batch"] = summary["nsa_step_batch_size_sum"] / summary["nsa_decode_steps_total"]
        if a.history != "0":
            summary["ttft_vs_history"] = ttft_against_history(base, [int(x) for x in a.history.split(",")],
                                                              " And he said,", 8)
        print(json.dumps(summary, indent=1))
        if r["errors"]:
            print("first errors:", r["errors"][:3], file=sys.stderr)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(summary, f, indent=1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
