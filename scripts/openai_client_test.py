#!/usr/bin/env python3
"""`frugal serve` through the official `openai` Python client.

    python3 scripts/openai_client_test.py --frugal target/debug/frugal \
        --model ../shared/fixtures/models/qwen2-Q8_0.gguf

Starts the server on 127.0.0.1 (a port the OS picks) with an API key, waits for /health, runs every
function in CHECKS against it, prints one line per check, stops the server with SIGTERM and exits 1
if any check failed. `scripts/test.sh` runs it in a venv with `pip install openai`.

To add a check, write a function taking the `Ctx` and decorate it with `@check`; use plain asserts
with a message. Every request has a timeout (`--request-timeout`); the server is killed on any exit.
"""
import argparse
import json
import os
import re
import sys
import time
import traceback
import urllib.error
import urllib.request

import openai
from openai import OpenAI
from serve_process import Server

API_KEY = "test-key-123"
BLOCK_SIZE = 16  # passed as --block-size: the unit of prefix caching
CTX = 1024

CHECKS = []


def check(fn):
    """Registers a check; checks run in the order they are defined."""
    CHECKS.append(fn)
    return fn


class Ctx:
    def __init__(self, base_url, model, timeout):
        self.base_url = base_url  # http://127.0.0.1:PORT
        self.model = model  # the id the server serves
        self.timeout = timeout
        self.client = OpenAI(base_url=base_url + "/v1", api_key=API_KEY, timeout=timeout, max_retries=0)

    def chat(self, content, **kw):
        kw.setdefault("model", self.model)
        kw.setdefault("max_tokens", 8)
        messages = content if isinstance(content, list) else [{"role": "user", "content": content}]
        return self.client.chat.completions.create(messages=messages, **kw)

    def complete(self, prompt, **kw):
        kw.setdefault("model", self.model)
        kw.setdefault("max_tokens", 8)
        return self.client.completions.create(prompt=prompt, **kw)

    def respond(self, input, **kw):
        kw.setdefault("model", self.model)
        kw.setdefault("max_output_tokens", 8)
        return self.client.responses.create(input=input, **kw)

    def get(self, path):
        with urllib.request.urlopen(self.base_url + path, timeout=self.timeout) as r:
            return r.status, r.read().decode()


def usage_ok(u, what):
    assert u is not None, f"{what}: no usage"
    assert u.prompt_tokens > 0, f"{what}: prompt_tokens {u.prompt_tokens}"
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, f"{what}: total_tokens {u}"
    d = u.prompt_tokens_details
    assert d is not None and d.cached_tokens is not None, f"{what}: no prompt_tokens_details.cached_tokens: {u}"
    assert 0 <= d.cached_tokens <= u.prompt_tokens, f"{what}: cached_tokens {d.cached_tokens} of {u.prompt_tokens}"


def stop_piece(text, length=2):
    """A substring of `text` to stop on: from its second half, printable if possible (a random-weight
    model may write nothing but newlines), never with a replacement character."""
    starts = range(len(text) // 2, len(text) - length + 1)
    for start in starts:
        piece = text[start:start + length]
        if piece.strip() == piece and piece.isprintable() and "\ufffd" not in piece:
            return piece
    for start in starts:
        if "\ufffd" not in text[start:start + length]:
            return text[start:start + length]
    return None


@check
def models_list(c):
    ids = [m.id for m in c.client.models.list().data]
    assert ids == [c.model], f"models: {ids}"
    assert c.client.models.retrieve(c.model).id == c.model


@check
def chat_completion(c):
    r = c.chat("Hello there", max_tokens=8, temperature=0)
    assert r.object == "chat.completion", r.object
    assert len(r.choices) == 1
    ch = r.choices[0]
    assert ch.index == 0
    assert ch.message.role == "assistant", ch.message.role
    assert isinstance(ch.message.content, str), ch.message
    assert ch.finish_reason in ("length", "stop"), ch.finish_reason
    usage_ok(r.usage, "chat")
    assert 1 <= r.usage.completion_tokens <= 8, r.usage
    if ch.finish_reason == "length":
        assert r.usage.completion_tokens == 8, r.usage
    assert r.model == c.model and r.id, (r.model, r.id)
    # Greedy is greedy.
    r2 = c.chat("Hello there", max_tokens=8, temperature=0)
    assert r2.choices[0].message.content == ch.message.content, (r2.choices[0].message.content, ch.message.content)


@check
def text_completion(c):
    r = c.complete("Once upon a time", max_tokens=10, temperature=0)
    assert r.object == "text_completion", r.object
    assert len(r.choices) == 1 and isinstance(r.choices[0].text, str), r.choices
    assert r.choices[0].finish_reason in ("length", "stop"), r.choices[0].finish_reason
    usage_ok(r.usage, "completion")
    assert 1 <= r.usage.completion_tokens <= 10, r.usage
    # Several prompts at once.
    r = c.complete(["one", "two two"], max_tokens=3, temperature=0)
    assert sorted(ch.index for ch in r.choices) == [0, 1], r.choices


@check
def streaming_chat(c):
    want = c.chat("Stream to me", max_tokens=12, temperature=0)
    stream = c.chat("Stream to me", max_tokens=12, temperature=0, stream=True,
                    stream_options={"include_usage": True})
    text, finish, usage, n_chunks, role = "", None, None, 0, None
    for chunk in stream:
        n_chunks += 1
        assert chunk.object == "chat.completion.chunk", chunk.object
        if chunk.usage is not None:
            assert not chunk.choices, f"the usage chunk has no choices: {chunk}"
            usage = chunk.usage
            continue
        assert len(chunk.choices) == 1, chunk
        d = chunk.choices[0].delta
        role = role or d.role
        text += d.content or ""
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert role == "assistant", role
    assert finish == want.choices[0].finish_reason, (finish, want.choices[0].finish_reason)
    assert text == want.choices[0].message.content, f"stream {text!r} != non-stream {want.choices[0].message.content!r}"
    usage_ok(usage, "stream usage")
    assert usage.completion_tokens == want.usage.completion_tokens, (usage, want.usage)
    assert usage.prompt_tokens == want.usage.prompt_tokens, (usage, want.usage)
    assert n_chunks >= 3, n_chunks


@check
def streaming_completion(c):
    want = c.complete("Stream a completion", max_tokens=6, temperature=0)
    text, finish = "", None
    for chunk in c.complete("Stream a completion", max_tokens=6, temperature=0, stream=True):
        if chunk.choices:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
    assert text == want.choices[0].text, (text, want.choices[0].text)
    assert finish == want.choices[0].finish_reason, finish


@check
def n_choices(c):
    r = c.chat("Give me two", n=2, max_tokens=6, temperature=1.0, seed=5)
    assert sorted(ch.index for ch in r.choices) == [0, 1], [ch.index for ch in r.choices]
    assert all(isinstance(ch.message.content, str) for ch in r.choices)
    assert 2 <= r.usage.completion_tokens <= 12, r.usage
    r = c.complete("Give me two", n=2, max_tokens=5, temperature=0)
    assert len(r.choices) == 2 and r.choices[0].text == r.choices[1].text, "greedy choices agree"
    assert r.usage.completion_tokens == 10 or r.choices[0].finish_reason == "stop", r.usage
    # Streaming with n=2: both indices end with a finish_reason.
    finished = set()
    for chunk in c.complete("Give me two", n=2, max_tokens=4, temperature=0, stream=True):
        for ch in chunk.choices:
            if ch.finish_reason:
                finished.add(ch.index)
    assert finished == {0, 1}, finished


@check
def chat_logprobs(c):
    r = c.chat("Log my probs", max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.content, f"no logprobs.content: {r.choices[0]}"
    assert len(lp.content) == r.usage.completion_tokens, (len(lp.content), r.usage)
    for e in lp.content:
        assert e.logprob <= 0.0, e
        assert isinstance(e.token, str) and isinstance(e.bytes, list), e
        assert 1 <= len(e.top_logprobs) <= 3, e.top_logprobs
        best = max(t.logprob for t in e.top_logprobs)
        assert abs(best - e.logprob) < 1e-4, f"greedy takes the most likely token: {e}"
    assert "".join(e.token for e in lp.content) == r.choices[0].message.content or \
        any("\ufffd" in e.token for e in lp.content), "the tokens spell the content"
    # Without logprobs there are none.
    r = c.chat("Log my probs", max_tokens=2, temperature=0)
    assert r.choices[0].logprobs is None, r.choices[0].logprobs


@check
def completion_logprobs(c):
    r = c.complete("Hello", max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert lp is not None, r.choices[0]
    n = r.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n, lp
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0.0 and 1 <= len(top) <= 2, (chosen, top)
        assert abs(max(top.values()) - chosen) < 1e-4, (chosen, top)
    assert lp.text_offset[0] == 0, lp.text_offset


@check
def seed_reproducibility(c):
    kw = dict(max_tokens=16, temperature=1.0, seed=1234)
    a = c.chat("Tell me something random", **kw).choices[0].message.content
    b = c.chat("Tell me something random", **kw).choices[0].message.content
    assert a == b, f"same seed, different text: {a!r} vs {b!r}"
    x = c.complete("Random words:", **kw).choices[0].text
    y = c.complete("Random words:", **kw).choices[0].text
    assert x == y, f"same seed, different completion: {x!r} vs {y!r}"


@check
def stop_strings(c):
    prompt = "Count with me: one two three"
    full = c.complete(prompt, max_tokens=24, temperature=0).choices[0].text
    stop = stop_piece(full) or stop_piece(full, 1)
    assert stop, f"no usable stop string in {full!r}"
    want = full[:full.index(stop)]
    r = c.complete(prompt, max_tokens=24, temperature=0, stop=[stop, "\x00never"])
    ch = r.choices[0]
    assert ch.finish_reason == "stop", f"finish_reason {ch.finish_reason} with stop {stop!r} in {full!r}"
    assert stop not in ch.text, f"stop {stop!r} in {ch.text!r}"
    assert ch.text == want, f"{ch.text!r} != {want!r} (stop {stop!r}, full {full!r})"
    # The same through a streaming chat.
    full = c.chat(prompt, max_tokens=24, temperature=0).choices[0].message.content
    stop = stop_piece(full) or stop_piece(full, 1)
    assert stop, f"no usable stop string in {full!r}"
    text, finish = "", None
    for chunk in c.chat(prompt, max_tokens=24, temperature=0, stop=stop, stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop", finish
    assert stop not in text, f"stop {stop!r} in streamed {text!r}"
    assert text == full[:full.index(stop)], (text, full, stop)


@check
def prefix_cache_usage(c):
    # A system prompt of many KV blocks, unique to this check; the second request finds its full
    # blocks in the prefix cache.
    system = f"[{time.time_ns()}] " + " ".join(
        f"Rule {i}: answer briefly, politely and only about item number {i}." for i in range(12))
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Which rule is first?"}]
    first = c.chat(messages, max_tokens=4, temperature=0)
    usage_ok(first.usage, "first")
    assert first.usage.prompt_tokens >= 4 * BLOCK_SIZE, f"prompt too short for the check: {first.usage}"
    second = c.chat(messages, max_tokens=4, temperature=0)
    usage_ok(second.usage, "second")
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= BLOCK_SIZE, f"no cached tokens on a repeated prompt: {second.usage}"
    assert cached > first.usage.prompt_tokens_details.cached_tokens, (first.usage, second.usage)
    assert cached <= second.usage.prompt_tokens, second.usage
    assert second.choices[0].message.content == first.choices[0].message.content


@check
def other_model_names(c):
    # One model served: any name is answered by it, and the response names it.
    r = c.chat("hi", model="gpt-4o-mini")
    assert r.model == c.model, r.model
    try:
        c.client.models.retrieve("no-such-model")
    except openai.NotFoundError as e:
        assert e.status_code == 404, e.status_code
    else:
        raise AssertionError("an unknown model id did not raise NotFoundError")


@check
def error_bad_api_key(c):
    bad = OpenAI(base_url=c.base_url + "/v1", api_key="wrong-key", timeout=c.timeout, max_retries=0)
    for call in (lambda: bad.chat.completions.create(model=c.model, messages=[{"role": "user", "content": "hi"}]),
                 lambda: bad.models.list()):
        try:
            call()
        except openai.AuthenticationError as e:
            assert e.status_code == 401, e.status_code
        else:
            raise AssertionError("a bad API key did not raise AuthenticationError")


@check
def error_invalid_parameter(c):
    for kw, param in ((dict(temperature=-1), "temperature"), (dict(n=1000), "n"),
                      (dict(logprobs=True, top_logprobs=99), "top_logprobs")):
        try:
            c.chat("hi", **kw)
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.param == param, (kw, e.status_code, e.param, e.body)
        else:
            raise AssertionError(f"{kw} did not raise BadRequestError")
    try:
        c.complete("hi", max_tokens=10 * CTX)
    except openai.BadRequestError as e:
        assert e.code == "context_length_exceeded", e.body
    else:
        raise AssertionError("max_tokens beyond the context did not raise BadRequestError")


@check
def health_and_metrics(c):
    status, body = c.get("/health")
    assert status == 200 and json.loads(body)["status"] == "ok", (status, body)
    status, body = c.get("/metrics")
    assert status == 200, status
    for name in ("frugal_requests_finished_total", "frugal_prefix_cache_hit_tokens_total",
                 "frugal_time_to_first_token_seconds_count"):
        m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body, re.M)
        assert m and float(m.group(1)) > 0, f"{name} missing or zero in /metrics"


# --- The Responses API (client.responses) ---

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150}},
          "required": ["name", "age"], "additionalProperties": False}
PERSON_FORMAT = {"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}}


def responses_usage_ok(r, what):
    u = r.usage
    assert u is not None and u.input_tokens > 0, f"{what}: usage {u}"
    assert u.total_tokens == u.input_tokens + u.output_tokens, f"{what}: total_tokens {u}"
    assert 0 <= u.input_tokens_details.cached_tokens <= u.input_tokens, f"{what}: cached_tokens {u}"
    assert u.output_tokens_details.reasoning_tokens <= u.output_tokens, f"{what}: reasoning_tokens {u}"


def person_ok(text, what):
    doc = json.loads(text)
    assert set(doc) == {"name", "age"} and isinstance(doc["name"], str) and isinstance(doc["age"], int), \
        f"{what}: {doc}"
    assert len(doc["name"]) <= 12 and 0 <= doc["age"] <= 150, f"{what}: {doc}"


@check
def responses_create(c):
    r = c.respond("Hello there", max_output_tokens=8, temperature=0)
    assert r.object == "response" and r.id.startswith("resp_"), (r.object, r.id)
    assert r.model == c.model, r.model
    assert r.status in ("completed", "incomplete"), r.status
    messages = [o for o in r.output if o.type == "message"]
    assert len(messages) == 1 and messages[0].role == "assistant", r.output
    assert messages[0].content[0].type == "output_text", messages[0]
    assert r.output_text == messages[0].content[0].text, (r.output_text, messages[0])
    responses_usage_ok(r, "create")
    again = c.respond("Hello there", max_output_tokens=8, temperature=0)
    assert again.output_text == r.output_text, "greedy is greedy"
    # Instructions open the prompt and are repeated.
    told = c.respond("Hello there", instructions="Answer in one short, polite sentence.", temperature=0)
    assert told.instructions == "Answer in one short, polite sentence.", told.instructions
    assert told.usage.input_tokens > r.usage.input_tokens, (told.usage, r.usage)
    # The length limit.
    cut = c.respond("Hello there", max_output_tokens=2, temperature=0)
    assert cut.status == "incomplete", cut.status
    assert cut.incomplete_details.reason == "max_output_tokens", cut.incomplete_details
    assert cut.usage.output_tokens == 2, cut.usage
    # Stored: retrieved by id, then deleted.
    got = c.client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text, got
    c.client.responses.delete(r.id)
    try:
        c.client.responses.retrieve(r.id)
    except openai.NotFoundError as e:
        assert e.status_code == 404, e.status_code
    else:
        raise AssertionError("a deleted response was still retrieved")


@check
def responses_json_schema(c):
    r = c.respond("A person, please.", max_output_tokens=120, temperature=0, text=PERSON_FORMAT)
    assert r.status == "completed", (r.status, r.output_text)
    person_ok(r.output_text, "json_schema")
    assert r.text.format.type == "json_schema" and r.text.format.name == "person", r.text


@check
def responses_stream(c):
    # A structured answer ends by itself: the SDK assembles the final response from the events.
    kw = dict(model=c.model, input="A person, please.", max_output_tokens=120, temperature=0, text=PERSON_FORMAT)
    want = c.client.responses.create(**kw)
    deltas, types = [], []
    with c.client.responses.stream(**kw) as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert types[:2] == ["response.created", "response.in_progress"], types[:2]
    assert types[-1] == "response.completed", types[-1]
    assert "".join(deltas) == want.output_text, ("".join(deltas), want.output_text)
    assert final.output_text == want.output_text, (final.output_text, want.output_text)
    assert final.status == want.status and final.usage.output_tokens == want.usage.output_tokens, (final, want)
    assert [o.type for o in final.output] == [o.type for o in want.output], (final.output, want.output)
    person_ok(final.output_text, "streamed json_schema")
    # A plain answer the length limit cuts ends with `response.incomplete`.
    want = c.respond("Stream to me", max_output_tokens=12, temperature=0)
    text, last = "", None
    for event in c.client.responses.create(model=c.model, input="Stream to me", max_output_tokens=12,
                                           temperature=0, stream=True):
        last = event
        if event.type == "response.output_text.delta":
            text += event.delta
    assert text == want.output_text, (text, want.output_text)
    want_type = "response.incomplete" if want.status == "incomplete" else "response.completed"
    assert last.type == want_type and last.response.status == want.status, (last.type, want.status)


@check
def responses_previous_response_id(c):
    # Instructions of several KV blocks, unique to this check, so the continuation's prompt
    # starts with cached blocks.
    instructions = f"[{time.time_ns()}] " + " ".join(
        f"Rule {i}: remember every name you are told and repeat it when asked." for i in range(8))
    first = c.respond("My name is Ann.", instructions=instructions, max_output_tokens=4, temperature=0)
    second = c.respond("What is my name?", instructions=instructions, previous_response_id=first.id,
                       max_output_tokens=4, temperature=0)
    assert second.previous_response_id == first.id, second.previous_response_id
    assert second.usage.input_tokens >= first.usage.input_tokens + first.usage.output_tokens, \
        (first.usage, second.usage)
    assert second.usage.input_tokens_details.cached_tokens >= BLOCK_SIZE, second.usage
    try:
        c.respond("Hi", previous_response_id="resp_unknown")
    except openai.NotFoundError as e:
        assert e.param == "previous_response_id", e.body
    else:
        raise AssertionError("an unknown previous_response_id did not raise NotFoundError")


@check
def responses_errors(c):
    for kw, param in ((dict(tools=[{"type": "web_search_preview"}]), "tools[0].type"),
                      (dict(temperature=-1), "temperature"),
                      (dict(text={"format": {"type": "xml"}}), "text.format.type")):
        try:
            c.respond("hi", **kw)
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.param == param, (kw, e.status_code, e.param, e.body)
        else:
            raise AssertionError(f"{kw} did not raise BadRequestError")
    image = [{"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/a.png"}]}]
    try:
        c.respond(image)
    except openai.BadRequestError as e:
        assert e.param == "input[0].content[0]", e.body
    else:
        raise AssertionError("an image did not raise BadRequestError")


# --- Reasoning, tool calls and structured output (run with --chat-template-file and
# --output-checks: a template that opens <think>, such as DeepSeek-R1-Distill's) ---

OUTPUT_CHECKS = []


def output_check(fn):
    OUTPUT_CHECKS.append(fn)
    return fn


THINKING = {"chat_template_kwargs": {"enable_thinking": True}}
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@output_check
def reasoning_content(c):
    r = c.chat("Why is the sky blue?", max_tokens=24, extra_body={**THINKING, "max_reasoning_tokens": 8})
    m = r.choices[0].message
    reasoning = getattr(m, "reasoning_content", None) or (m.model_extra or {}).get("reasoning_content")
    assert reasoning, f"no reasoning_content: {m}"
    assert "</think>" not in (m.content or ""), f"think tag left in content: {m.content!r}"
    parts = {"reasoning": "", "content": ""}
    for chunk in c.chat("Why is the sky blue?", max_tokens=24, stream=True,
                        extra_body={**THINKING, "max_reasoning_tokens": 8}):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        parts["reasoning"] += (d.model_extra or {}).get("reasoning_content") or ""
        parts["content"] += d.content or ""
    assert parts["reasoning"], "no streamed reasoning_content"


@output_check
def tool_call_after_reasoning(c):
    # One call: with parallel calls allowed, unseeded sampling may add a second one.
    r = c.chat("Weather in Paris?", max_tokens=300, tools=WEATHER, tool_choice="required",
               parallel_tool_calls=False, extra_body={**THINKING, "max_reasoning_tokens": 6})
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls", ch.finish_reason
    calls = ch.message.tool_calls
    assert calls and calls[0].function.name == "get_weather", ch.message
    args = json.loads(calls[0].function.arguments)
    assert isinstance(args.get("city"), str), args
    assert (ch.message.model_extra or {}).get("reasoning_content") is not None, "reasoning was lost"
    # Streamed: deltas with index 0, the id and name first, then the arguments in pieces.
    name, arguments, ids, finish = None, "", set(), None
    for chunk in c.chat("Weather in Paris?", max_tokens=300, tools=WEATHER, tool_choice="required",
                        parallel_tool_calls=False, stream=True,
                        extra_body={**THINKING, "max_reasoning_tokens": 6}):
        if not chunk.choices:
            continue
        ch = chunk.choices[0]
        for tc in ch.delta.tool_calls or []:
            assert tc.index == 0, tc
            if tc.id:
                ids.add(tc.id)
                name = tc.function.name
            arguments += tc.function.arguments or ""
        finish = ch.finish_reason or finish
    assert name == "get_weather" and len(ids) == 1, (name, ids)
    assert isinstance(json.loads(arguments).get("city"), str), arguments
    assert finish == "tool_calls", finish


@output_check
def json_schema_after_reasoning(c):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}
    for stream in (False, True):
        kw = dict(max_tokens=300, response_format=fmt, extra_body={**THINKING, "max_reasoning_tokens": 6})
        if stream:
            text = "".join((ch.choices[0].delta.content or "") for ch in c.chat("A person", stream=True, **kw)
                           if ch.choices)
        else:
            text = c.chat("A person", **kw).choices[0].message.content
        doc = json.loads(text)
        assert set(doc) == {"name", "age"} and isinstance(doc["age"], int) and isinstance(doc["name"], str), doc


RESPONSES_WEATHER = [{"type": "function", "name": "get_weather", "description": "Current weather in a city",
                      "parameters": WEATHER[0]["function"]["parameters"]}]


@output_check
def responses_reasoning(c):
    r = c.respond("Why is the sky blue?", max_output_tokens=24, reasoning={"effort": "low"},
                  extra_body={"max_reasoning_tokens": 8})
    assert r.output and r.output[0].type == "reasoning", r.output
    assert r.output[0].content and r.output[0].content[0].text, r.output[0]
    assert r.reasoning.effort == "low", r.reasoning
    assert r.usage.output_tokens_details.reasoning_tokens > 0, r.usage


@output_check
def responses_function_call_round_trip(c):
    kw = dict(model=c.model, tools=RESPONSES_WEATHER, tool_choice={"type": "function", "name": "get_weather"},
              parallel_tool_calls=False, max_output_tokens=300, reasoning={"effort": "low"},
              extra_body={"max_reasoning_tokens": 6})
    r = c.client.responses.create(input="Weather in Paris?", **kw)
    calls = [o for o in r.output if o.type == "function_call"]
    assert r.status == "completed" and len(calls) == 1, (r.status, r.output)
    call = calls[0]
    assert call.name == "get_weather" and call.call_id, call
    assert isinstance(json.loads(call.arguments).get("city"), str), call.arguments
    # Streamed: the arguments arrive in deltas, and the SDK assembles the same call.
    arguments = ""
    with c.client.responses.stream(input="Weather in Paris?", **kw) as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                arguments += event.delta
        final = stream.get_final_response()
    streamed = [o for o in final.output if o.type == "function_call"]
    assert len(streamed) == 1 and streamed[0].arguments == arguments, (streamed, arguments)
    assert isinstance(json.loads(arguments).get("city"), str), arguments
    # The result goes back by previous_response_id; the model answers in text.
    result = [{"type": "function_call_output", "call_id": call.call_id, "output": "18 C, cloudy"}]
    answer = c.client.responses.create(model=c.model, input=result, previous_response_id=r.id,
                                       tools=RESPONSES_WEATHER, max_output_tokens=16,
                                       reasoning={"effort": "none"})
    assert answer.usage.input_tokens > r.usage.input_tokens, (answer.usage, r.usage)
    assert answer.status in ("completed", "incomplete") and answer.output, answer


def server_command(args):
    """`frugal serve` as these checks run it."""
    cmd = [args.frugal, "serve", args.model, "--host", "127.0.0.1", "--port", "0",
           "--api-key", API_KEY, "-c", str(CTX), "--max-seqs", "4", "--block-size", str(BLOCK_SIZE),
           "-t", str(args.threads), "--shutdown-timeout", "5"]
    if args.chat_template_file:
        cmd += ["--chat-template-file", args.chat_template_file]
    return cmd


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frugal", required=True, help="the frugal binary")
    ap.add_argument("--model", required=True, help="a GGUF model (a tiny fixture)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--startup-timeout", type=float, default=120, help="seconds to wait for /health")
    ap.add_argument("--request-timeout", type=float, default=60, help="seconds per request")
    ap.add_argument("-k", dest="only", help="run only checks whose name contains this")
    ap.add_argument("--chat-template-file", help="a Jinja chat template for the server")
    ap.add_argument("--output-checks", action="store_true",
                    help="run the reasoning / tool-call / structured-output checks instead "
                         "(with a template that opens <think>, e.g. DeepSeek-R1-Distill's)")
    args = ap.parse_args()

    print(f"openai {openai.__version__}", flush=True)
    model = os.path.splitext(os.path.basename(args.model))[0]
    checks = [fn for fn in (OUTPUT_CHECKS if args.output_checks else CHECKS)
              if not args.only or args.only in fn.__name__]
    return run_checks(args, checks, lambda base: Ctx(base, model, args.request_timeout), "openai")


def run_checks(args, checks, make_ctx, client):
    """Starts the server, runs each check on `make_ctx(base_url)`, stops the server with SIGTERM;
    prints one line per check and returns the exit status (1 if anything failed)."""
    server = Server(server_command(args))
    failed = []
    try:
        try:
            base = server.wait_ready(args.startup_timeout)
        except RuntimeError as e:
            print(f"FAIL startup: {e}\n--- server log ---\n{server.log_text()}", flush=True)
            return 1
        ctx = make_ctx(base)
        for fn in checks:
            t0 = time.monotonic()
            try:
                fn(ctx)
                print(f"ok   {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
            except Exception as e:  # noqa: BLE001 - report every failure, go on with the others
                failed.append(fn.__name__)
                kind = "" if isinstance(e, AssertionError) else f"{type(e).__name__}: "
                print(f"FAIL {fn.__name__}: {kind}{e}", flush=True)
                if not isinstance(e, AssertionError):
                    traceback.print_exc()
        status = server.stop()
        if status == 0:
            print("ok   shutdown (SIGTERM, exit status 0)", flush=True)
        else:
            failed.append("shutdown")
            print(f"FAIL shutdown: exit status {status} after SIGTERM", flush=True)
        if failed:
            print(f"--- server log ---\n{server.log_text()}", flush=True)
            print(f"{len(failed)} check(s) failed: {', '.join(failed)}", flush=True)
            return 1
        print(f"all {client} client checks passed", flush=True)
        return 0
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
