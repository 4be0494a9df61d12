#!/usr/bin/env python3
"""`frugal serve` through the official `anthropic` Python client (the Messages API).

    python3 scripts/anthropic_client_test.py --frugal target/debug/frugal \
        --model ../shared/fixtures/models/qwen2-Q8_0.gguf [--output-checks --chat-template-file T]

Starts the server as scripts/openai_client_test.py does (its `Server`), runs every check against
`/v1/messages` with `anthropic.Anthropic(base_url=..., api_key=...)`, prints one line per check and
exits 1 if any failed. `--output-checks` runs the tool-use and thinking checks instead, on a
template that opens `<think>` (DeepSeek-R1-Distill's). `scripts/test.sh` runs both.
"""
import argparse
import json
import os
import sys

import anthropic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from openai_client_test import API_KEY, run_checks, stop_piece  # noqa: E402

CHECKS = []
OUTPUT_CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def output_check(fn):
    OUTPUT_CHECKS.append(fn)
    return fn


class Ctx:
    def __init__(self, base_url, timeout):
        self.base_url = base_url
        self.timeout = timeout
        self.client = anthropic.Anthropic(base_url=base_url, api_key=API_KEY, timeout=timeout, max_retries=0)

    def create(self, content, **kw):
        kw.setdefault("model", "claude-sonnet-4-5")
        kw.setdefault("max_tokens", 8)
        messages = content if isinstance(content, list) else [{"role": "user", "content": content}]
        return self.client.messages.create(messages=messages, **kw)

    def stream(self, content, **kw):
        kw.setdefault("model", "claude-sonnet-4-5")
        kw.setdefault("max_tokens", 8)
        messages = content if isinstance(content, list) else [{"role": "user", "content": content}]
        return self.client.messages.stream(messages=messages, **kw)


# Sampling fields go in `extra_body`: this SDK's `create` no longer takes them.
GREEDY = {"temperature": 0}


def text_of(message):
    return "".join(b.text for b in message.content if b.type == "text")


@check
def create_message(c):
    m = c.create("Hello", system="Be brief.", metadata={"user_id": "u-1"})
    assert m.type == "message" and m.role == "assistant", m
    assert m.content and m.content[0].type == "text", m.content
    assert m.stop_reason in ("end_turn", "max_tokens"), m.stop_reason
    assert m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) > 0, m.usage
    assert m.usage.output_tokens > 0, m.usage


@check
def stream_matches_create(c):
    plain = c.create("Tell me a story", max_tokens=12, extra_body=GREEDY)
    with c.stream("Tell me a story", max_tokens=12, extra_body=GREEDY) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed == text_of(plain), (streamed, text_of(plain))
    assert text_of(final) == streamed
    assert final.stop_reason == plain.stop_reason, (final.stop_reason, plain.stop_reason)
    assert final.usage.output_tokens == plain.usage.output_tokens, (final.usage, plain.usage)


@check
def stop_sequences(c):
    text = text_of(c.create("Count to ten", max_tokens=24, extra_body=GREEDY))
    stop = stop_piece(text)
    if stop is None:
        return
    m = c.create("Count to ten", max_tokens=24, extra_body=GREEDY, stop_sequences=[stop])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == stop, (m.stop_reason, m.stop_sequence)
    assert text_of(m) == text[:text.index(stop)], (text_of(m), text)


@check
def sampling_parameters(c):
    # Newer SDKs no longer take these as arguments; older ones and other clients send them.
    for kw in (dict(temperature=0.5), dict(top_p=0.9), dict(top_k=5)):
        m = c.create("Hi", extra_body=kw)
        assert m.type == "message", kw


@check
def count_tokens(c):
    n = c.client.messages.count_tokens(model="claude-sonnet-4-5", system="Be brief.",
                                       messages=[{"role": "user", "content": "Hello there"}])
    assert n.input_tokens > 0, n
    m = c.create("Hello there", system="Be brief.", max_tokens=1)
    assert n.input_tokens == m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0), (n, m.usage)


@check
def errors(c):
    bad = anthropic.Anthropic(base_url=c.base_url, api_key="wrong-key", timeout=c.timeout, max_retries=0)
    try:
        bad.messages.create(model="m", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    except anthropic.AuthenticationError as e:
        assert e.status_code == 401 and e.body["error"]["type"] == "authentication_error", e.body
    else:
        raise AssertionError("a bad API key did not raise AuthenticationError")
    try:
        c.create("hi", max_tokens=0)
    except anthropic.BadRequestError as e:
        assert e.body["type"] == "error" and e.body["error"]["type"] == "invalid_request_error", e.body
    else:
        raise AssertionError("max_tokens=0 did not raise BadRequestError")


WEATHER = [{"name": "get_weather", "description": "Current weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                             "required": ["city"]}}]


@output_check
def tool_round_trip(c):
    question = {"role": "user", "content": "Weather in Paris?"}
    kw = dict(max_tokens=300, tools=WEATHER, tool_choice={"type": "tool", "name": "get_weather"},
              thinking={"type": "enabled", "budget_tokens": 6})
    m = c.create([question], **kw)
    assert m.stop_reason == "tool_use", m
    calls = [b for b in m.content if b.type == "tool_use"]
    assert calls and calls[0].name == "get_weather" and isinstance(calls[0].input.get("city"), str), m.content
    # Streamed: the final message has the call with its input assembled from the JSON deltas.
    with c.stream([question], **kw) as s:
        final = s.get_final_message()
    calls = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and calls, final
    assert isinstance(calls[0].input.get("city"), str), calls[0].input
    # The round trip as the SDK's docs write it: the assistant's content as it came back, then the result.
    after = c.create([question, {"role": "assistant", "content": m.content},
                      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id,
                                                    "content": "18 C, cloudy"}]}],
                     max_tokens=8, tools=WEATHER)
    assert after.type == "message", after


@output_check
def structured_output(c):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    m = c.create("A person", max_tokens=300, output_config={"format": {"type": "json_schema", "schema": schema}},
                  thinking={"type": "enabled", "budget_tokens": 6})
    doc = json.loads(text_of(m))
    assert set(doc) == {"name", "age"} and isinstance(doc["age"], int), doc


@output_check
def thinking(c):
    kw = dict(max_tokens=40, thinking={"type": "enabled", "budget_tokens": 8})
    m = c.create("Why is the sky blue?", **kw)
    assert m.content[0].type == "thinking" and m.content[0].thinking, m.content
    with c.stream("Why is the sky blue?", **kw) as s:
        final = s.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking, final.content


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frugal", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--startup-timeout", type=float, default=120)
    ap.add_argument("--request-timeout", type=float, default=60)
    ap.add_argument("--chat-template-file")
    ap.add_argument("--output-checks", action="store_true")
    args = ap.parse_args()

    print(f"anthropic {anthropic.__version__}", flush=True)
    checks = OUTPUT_CHECKS if args.output_checks else CHECKS
    return run_checks(args, checks, lambda base: Ctx(base, args.request_timeout), "anthropic")


if __name__ == "__main__":
    sys.exit(main())
