#!/usr/bin/env python3
"""Expected renderings of full tool round trips, for crates/chat/tests/round_trip.rs.

Renders each conversation below (system, user, assistant tool call with null or missing content,
tool result, assistant answer, next user turn: the shapes the openai SDK and LangChain send back)
through every chat template in ../shared/fixtures/templates and crates/chat/tests/data/templates
with transformers' own renderer (`render_jinja_template`, what `apply_chat_template(...,
tokenize=False)` calls, with the template's special tokens and the conversation's `kwargs` such as
`enable_thinking` as variables), and writes
crates/chat/tests/data/round_trip.json.

The messages are normalized first exactly as frugal_chat::normalize_messages does (that is the
behaviour under test, documented there):
  - null-valued fields other than `content` are dropped (the SDK's `refusal`, `audio`, ...);
  - missing `content` becomes null;
  - content given as a list of parts becomes the text parts joined with "\n";
  - `function.arguments` given as a JSON string becomes the parsed value ("" becomes {}).
Then the template is rendered with null content kept; if that raises, it is rendered again with
null content replaced by "" (null becomes "" only where the template needs a string).

usage: python3 scripts/gen_template_renderings.py [FIXTURES_DIR]
needs: pip install transformers==5.23.0 jinja2==3.1.6   (no torch needed)
"""
import copy
import glob
import json
import os
import sys

import jinja2
import jinja2.sandbox
import transformers
from transformers.utils import chat_template_utils
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "fixtures")
DATA = os.path.join(ROOT, "crates", "chat", "tests", "data")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "City and country, e.g. Paris, France"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["location"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Get the local time in a city.",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
        },
    },
]

# What `messages.append(resp.choices[0].message)` sends with the openai SDK: content null, the
# SDK's other null fields, arguments as a JSON string.
OPENAI_SDK = [
    {"role": "system", "content": "You are a weather bot."},
    {"role": "user", "content": "What's the weather in Paris, in celsius?"},
    {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "audio": None,
        "function_call": None,
        "tool_calls": [
            {
                "id": "call_0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris, France\", \"unit\": \"celsius\"}"},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_0", "content": "{\"temperature\": 18, \"condition\": \"cloudy\"}"},
    {"role": "assistant", "content": "It is 18 °C and cloudy in Paris.", "refusal": None, "tool_calls": None},
    {"role": "user", "content": "And what time is it there?"},
]

# LangChain's shapes, and the other spellings clients use: content as text parts, an assistant
# message without `content`, two parallel calls (one with no arguments), tool results as parts.
LANGCHAIN = [
    {"role": "system", "content": [{"type": "text", "text": "You are a weather bot."}]},
    {"role": "user", "content": [{"type": "text", "text": "Weather and time in Paris?"}, {"type": "text", "text": "Be brief."}]},
    {
        "role": "assistant",
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{\"location\": \"Paris\"}"}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_a", "name": "get_weather", "content": [{"type": "text", "text": "{\"temperature\": 18}"}]},
    {"role": "tool", "tool_call_id": "call_b", "name": "get_time", "content": "14:05"},
    {"role": "assistant", "content": "18 °C, and it is 14:05."},
    {"role": "user", "content": "Thanks! Tomorrow?"},
]

# A tool whose parameters have every JSON type (templates that write arguments as text, like
# Qwen3.5's XML calls, print each through Python's str()), and list-valued types.
TYPED_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_forecast",
            "description": "Forecast for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string"},
                    "days": {"type": "integer", "minimum": 1},
                    "ratio": {"type": "number"},
                    "metric": {"type": "boolean"},
                    "fallback": {"type": ["string", "integer"]},
                    "options": {"type": "object"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "note": {"type": "string", "enum": ["a", "b"]},
                },
                "required": ["location", "days"],
            },
        },
    },
    TOOLS[1],
]

TYPED_ARGS = {
    "location": "Paris, France",
    "days": 3,
    "ratio": 0.5,
    "metric": True,
    "fallback": None,
    "options": {"lang": ["fr", "en"], "deep": {"x": None, "y": False}},
    "tags": ["a", "b"],
    "note": "line one\nline two",
}

# An agent loop that ends on tool results: the reasoning since the last user turn is rendered
# back (Qwen3.5), earlier reasoning is dropped, reasoning may also come inside the content.
AGENT = [
    {"role": "system", "content": "You are a weather bot."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "<think>\nGreeting.\n</think>\n\nHello! How can I help?"},
    {"role": "user", "content": "Forecast and time in Paris?"},
    {
        "role": "assistant",
        "reasoning_content": "\nThe user wants a forecast.\nCall get_forecast.\n",
        "content": "",
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_forecast", "arguments": json.dumps(TYPED_ARGS)}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_a", "content": "{\"days\": [18, 20, 17]}"},
    {
        "role": "assistant",
        "reasoning_content": "Now the time.",
        "content": "Checking the time.",
        "tool_calls": [
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{\"location\": \"Paris\"}"}},
            {"id": "call_c", "type": "function", "function": {"name": "get_time", "arguments": "{\"location\": \"Lyon\"}"}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "14:05"}]},
    {"role": "tool", "tool_call_id": "call_c", "content": "14:05"},
]

# The agent's answer, then a new question: all reasoning is now before the last query.
AGENT_DONE = AGENT + [
    {"role": "assistant", "reasoning_content": "Both known.", "content": "18 °C; it is 14:05."},
    {"role": "user", "content": "Thanks!"},
]

# A conversation without tools, in the strict user/assistant alternation Gemma's template demands.
PLAIN = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi  there "},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Say 日本 and 🙂."},
]

CONVERSATIONS = {
    "plain": {"messages": PLAIN, "tools": [], "add_generation_prompt": True},
    "plain_no_thinking": {"messages": PLAIN, "tools": [], "add_generation_prompt": True, "kwargs": {"enable_thinking": False}},
    "openai_sdk": {"messages": OPENAI_SDK, "tools": TOOLS, "add_generation_prompt": True},
    "langchain": {"messages": LANGCHAIN, "tools": TOOLS, "add_generation_prompt": True},
    "agent_thinking": {"messages": AGENT, "tools": TYPED_TOOLS, "add_generation_prompt": True, "kwargs": {"enable_thinking": True}},
    "agent_no_thinking": {"messages": AGENT, "tools": TYPED_TOOLS, "add_generation_prompt": True, "kwargs": {"enable_thinking": False}},
    "agent_done": {"messages": AGENT_DONE, "tools": TYPED_TOOLS, "add_generation_prompt": True},
    "agent_done_no_tools": {"messages": AGENT_DONE, "tools": [], "add_generation_prompt": True, "kwargs": {"enable_thinking": False}},
}

# Templates of crates/chat/tests/data/templates and their special tokens.
LOCAL_TOKENS = {
    "HuggingFaceTB-SmolLM2-135M-Instruct": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"},
    "chatml": {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": None},
    "Qwen-Qwen3.5-4B": {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "Qwen-Qwen3-Coder": {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    # llama.cpp's models/templates/GLM-4.6.jinja and GLM-4.7-Flash.jinja (zai-org's).
    "zai-org-GLM-4.6": {"bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
    "zai-org-GLM-4.7-Flash": {"bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
    # llama.cpp's Kimi-K2-Instruct.jinja, Kimi-K2-Thinking.jinja and moonshotai-Kimi-K2.jinja (the
    # first release's); the templates use no special-token variables.
    "moonshotai-Kimi-K2-Instruct": {"bos_token": "[BOS]", "eos_token": "[EOS]", "pad_token": "[PAD]"},
    "moonshotai-Kimi-K2-Thinking": {"bos_token": "[BOS]", "eos_token": "[EOS]", "pad_token": "[PAD]"},
    "moonshotai-Kimi-K2-old": {"bos_token": "[BOS]", "eos_token": "[EOS]", "pad_token": "[PAD]"},
    # google/gemma-3-*-it's template (the one crates/cli/tests/real_models/gemma3.jinja holds).
    "google-gemma-3-it": {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"},
    # ERNIE 4.5's published template as transformers' Ernie4_5Tokenizer carried it
    # (DEFAULT_CHAT_TEMPLATE); not checked against the model repository's own file.
    "baidu-ERNIE-4.5-0.3B-PT": {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>"},
}


def normalize(messages):
    out = []
    for m in messages:
        m = {k: v for k, v in copy.deepcopy(m).items() if v is not None or k == "content"}
        m.setdefault("content", None)
        if isinstance(m["content"], list):
            m["content"] = "\n".join(p["text"] for p in m["content"] if p.get("type", "text") == "text" and isinstance(p.get("text"), str))
        for call in m.get("tool_calls") or []:
            f = call.get("function", {})
            if isinstance(f.get("arguments"), str):
                text = f["arguments"]
                f["arguments"] = json.loads(text) if text.strip() else {}
        out.append(m)
    return out


# Templates whose calls use `list.append` (Kimi K2's tool-call id queue), which transformers'
# ImmutableSandboxedEnvironment refuses: rendered by the same function with jinja2's plain
# SandboxedEnvironment, which allows it (vLLM and llama.cpp do run them), everything else equal.
MUTABLE_LISTS = {"moonshotai-Kimi-K2-Instruct", "moonshotai-Kimi-K2-Thinking"}


def render_with_mutable_lists(**kwargs):
    saved = chat_template_utils.ImmutableSandboxedEnvironment
    chat_template_utils.ImmutableSandboxedEnvironment = jinja2.sandbox.SandboxedEnvironment
    chat_template_utils._compile_jinja_template.cache_clear()
    try:
        return render_jinja_template(**kwargs)
    finally:
        chat_template_utils.ImmutableSandboxedEnvironment = saved
        chat_template_utils._compile_jinja_template.cache_clear()


def render(source, messages, conv, tokens, mutable=False):
    kw = {k: v for k, v in tokens.items() if v is not None}
    renderer = render_with_mutable_lists if mutable else render_jinja_template
    rendered, _ = renderer(
        conversations=[messages],
        tools=conv["tools"],
        chat_template=source,
        add_generation_prompt=conv["add_generation_prompt"],
        **kw,
        **conv.get("kwargs", {}),
    )
    return rendered[0]


def render_normalized(source, conv, tokens, mutable=False):
    """{"text": ..., "null_content": how null content was passed}, or {"error": ...} when the
    template refuses the conversation either way (e.g. Llama 3.1 and parallel calls)."""
    msgs = normalize(conv["messages"])
    try:
        return {"null_content": "null", "text": render(source, msgs, conv, tokens, mutable)}
    except Exception:
        empty = [dict(m, content="" if m["content"] is None else m["content"]) for m in msgs]
        try:
            return {"null_content": "empty string", "text": render(source, empty, conv, tokens, mutable)}
        except jinja2.exceptions.TemplateError as e:
            return {"error": str(e)}


def templates():
    for path in sorted(glob.glob(os.path.join(FIXTURES, "templates", "*.jinja"))):
        name = os.path.basename(path)[: -len(".jinja")]
        exp = json.load(open(os.path.join(FIXTURES, "templates", "expected", name + ".json"), encoding="utf-8"))
        yield "fixtures:" + name, path, exp["special_tokens"]
    for path in sorted(glob.glob(os.path.join(DATA, "templates", "*.jinja"))):
        name = os.path.basename(path)[: -len(".jinja")]
        yield "data:" + name, path, LOCAL_TOKENS[name]


def main():
    out = {
        "renderer": f"transformers {transformers.__version__} render_jinja_template (apply_chat_template's renderer), "
        "messages normalized as scripts/gen_template_renderings.py says",
        "conversations": CONVERSATIONS,
        "templates": {},
    }
    for key, path, tokens in templates():
        source = open(path, encoding="utf-8").read()
        rec = {"special_tokens": tokens, "cases": {}}
        for cname, conv in CONVERSATIONS.items():
            mutable = key.split(":", 1)[1] in MUTABLE_LISTS
            rec["cases"][cname] = render_normalized(source, conv, tokens, mutable)
        if key.split(":", 1)[1] in MUTABLE_LISTS:
            rec["renderer"] = "render_jinja_template with jinja2's SandboxedEnvironment (see MUTABLE_LISTS)"
        out["templates"][key] = rec
        print(key, {c: r.get("null_content", r.get("error")) for c, r in rec["cases"].items()})
    with open(os.path.join(DATA, "round_trip.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
