"""`nsa serve` against real clients: the official `openai` package (completions, chat,
streaming, an explicit conversation over several turns, errors) and Prometheus's own parser
of /metrics (its values agree with what the requests did); then faults: kill -9 during a
turn and a restart (every finished turn intact, the interrupted one absent, the other
conversations continue exactly as a copy of the state made before the kill does), and a
corrupted state file (that conversation refused with a clear error, the others served).

Run by ctest (serve.openai_client):
    python test_openai_client.py --nsa build/tools/nsa/nsa --workdir DIR
"""
import json
import os
import shutil
import signal
import sys
import threading

import openai
from serve_client import Server, check, test_arguments, train_tiny


def metric(m, name, **labels):
    return m[name + json.dumps(labels, sort_keys=True)]


def main():
    a = test_arguments()
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    ckpt = train_tiny(a.nsa, a.workdir)
    state = os.path.join(a.workdir, "state")
    srv = Server(a.nsa, ckpt, state)
    c = srv.client
    turns = 0
    model = c.models.list().data[0].id

    r = c.completions.create(model=model, prompt="And the word", max_tokens=12, temperature=0)
    turns += 1
    check(r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 12, "completion: 12 tokens, length")
    ch = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Who spoke?"}],
                                   max_tokens=10, temperature=0)
    turns += 1
    check(ch.choices[0].message.role == "assistant" and ch.usage.completion_tokens == 10, "chat: an assistant reply")
    # The official client resends the history: the second turn reuses the first's cache.
    history = [{"role": "user", "content": "Who spoke?"}, {"role": "assistant", "content": ch.choices[0].message.content},
               {"role": "user", "content": "And then?"}]
    ch2 = c.chat.completions.create(model=model, messages=history, max_tokens=10, temperature=0)
    turns += 1
    cached = ch2.usage.prompt_tokens_details.cached_tokens
    check(cached >= ch.usage.prompt_tokens, f"chat turn 2: {cached} of {ch2.usage.prompt_tokens} prompt tokens cached")

    pieces, finish, usage = [], None, None
    for chunk in c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Sing."}], max_tokens=30,
                                           temperature=0.7, seed=3, stream=True, stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    turns += 1
    check(finish == "length" and usage.completion_tokens == 30 and len(pieces) > 1, "chat stream: chunks, usage")

    # An explicit conversation (the extension field), several turns.
    for i, text in enumerate(["In the beginning", " was the word", " and the word"]):
        r = c.completions.create(model=model, prompt=text, max_tokens=8, temperature=0, extra_body={"conversation": "py1"})
        turns += 1
    status, body = srv.get("/v1/conversations/py1")
    py1 = json.loads(body)
    check(status == 200 and py1["tokens"] == 16 + 8 + 13 + 8 + 13 + 8 - 1, f"conversation py1 holds {py1['tokens']} tokens")
    r = c.completions.create(model=model, prompt="Another", max_tokens=5, extra_body={"conversation": "other"})
    turns += 1

    # Errors as the client sees them.
    try:
        c.completions.create(model=model, prompt="x", max_tokens=100000)
        check(False, "an over-long request was refused")
    except openai.BadRequestError as e:
        check("context limit" in str(e), "over the context limit: 400 naming it")
    status, body = srv.get("/v1/conversations/nobody")
    check(status == 404 and "nobody" in body, "unknown conversation: 404")

    # /metrics through Prometheus's parser agrees with the requests.
    m = srv.metrics()
    generated = metric(m, "nsa_generated_tokens_total")
    check(generated == 12 + 10 + 10 + 30 + 3 * 8 + 5, f"generated tokens {generated}")
    check(metric(m, "nsa_step_tokens_read_count") == generated, "one tokens-read observation per sampled token")
    check(metric(m, "nsa_turns_total") == turns, f"{turns} turns counted")
    check(metric(m, "nsa_time_to_first_token_seconds_count") == turns, "a time to first token per turn")
    check(metric(m, "nsa_gate_mean", layer="0", branch="slc") > 0, "gate means")
    check(metric(m, "nsa_state_bytes") > 0 and metric(m, "nsa_cache_bytes") > 0, "cache and state bytes")
    status, body = srv.get("/v1/conversations/py1/attention")
    att = json.loads(body)
    check(status == 200 and len(att["layers"]) == 2 and att["tokens_read"] > 0, "attention snapshot")

    # kill -9 during a long turn, then restart.
    snapshot = os.path.join(a.workdir, "state_before_kill")
    shutil.copytree(state, snapshot)
    got_some = threading.Event()

    def long_turn():
        try:
            for chunk in c.completions.create(model=model, prompt="A long one", max_tokens=6000, stream=True,
                                              extra_body={"conversation": "killed"}):
                got_some.set()
        except Exception:
            pass

    t = threading.Thread(target=long_turn)
    t.start()
    got_some.wait(timeout=60)
    srv.stop(signal.SIGKILL)
    t.join(timeout=60)
    srv = Server(a.nsa, ckpt, state)
    convs = {x["id"]: x for x in json.loads(srv.get("/v1/conversations")[1])["data"]}
    check(convs["py1"]["tokens"] == py1["tokens"], "after kill -9: py1's finished turns intact")
    check(convs.get("killed", {"tokens": 0})["tokens"] == 0, "the interrupted turn is absent")
    after = srv.client.completions.create(model=model, prompt=" and more", max_tokens=12, temperature=0,
                                          extra_body={"conversation": "py1"}).choices[0].text
    twin = Server(a.nsa, ckpt, snapshot)
    before = twin.client.completions.create(model=model, prompt=" and more", max_tokens=12, temperature=0,
                                            extra_body={"conversation": "py1"}).choices[0].text
    twin.stop()
    check(after == before, "py1 continues exactly as from the state saved before the kill")

    # A corrupted state file: that conversation refused, the others served.
    srv.stop()
    path = os.path.join(state, "other.nsaconv")
    with open(path, "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    srv = Server(a.nsa, ckpt, state)
    try:
        srv.client.completions.create(model=model, prompt="x", max_tokens=2, extra_body={"conversation": "other"})
        check(False, "a corrupted conversation was refused")
    except openai.InternalServerError as e:
        check("other.nsaconv" in str(e) and "corrupted" in str(e), "corrupted state file: 500 naming the file")
    r = srv.client.completions.create(model=model, prompt=" still", max_tokens=3, extra_body={"conversation": "py1"})
    check(r.usage.completion_tokens == 3, "the other conversations are served")
    srv.stop()
    print("serve client test: all passed")


if __name__ == "__main__":
    sys.exit(main())
