#!/usr/bin/env python3
"""Accounts for every result of bench/peer_suite/run.sh: reads results/junit.xml and puts each
failing test in one class (the cause of its first failing assertion, as judged by hand once;
see RESULTS.md):
  content   fails only on what the model writes or how it tokenizes (the suite expects the
            Hub's tinyllama / stories260K; every model here is SmolLM2-135M-Instruct)
  excluded  needs a model or feature out of scope (vision, FIM model, /slots, llama's web UI
            assets, MCP/cors-proxy, built-in tools, the `__verbose` debug object)
  real:KEY  a difference in frugal's API behaviour, KEY in REAL below
A failing test that no rule names is printed as UNCLASSIFIED (exit 1): judge it and add a rule.

  .peer-suite-venv/bin/python bench/peer_suite/classify.py [results/junit.xml]
"""
import collections
import os
import re
import sys
import xml.etree.ElementTree as ET

# (test-id regex, class); the first match wins. Test ids are "file.py::name[params]".
RULES = [
    # --- content: model-specific text, token counts, tokenizer
    (r"test_basic.py::test_load_split_model", "content"),
    (r"test_chat_completion.py::test_chat_completion_cached_tokens", "content"),
    (r"test_completion.py::test_completion\[", "content"),
    (r"test_completion.py::test_completion_stream\[", "content"),
    (r"test_completion.py::test_completion_stream_with_openai_library", "content"),
    (r"test_completion.py::test_completion_prompt_cache", "content"),
    (r"test_tokenize.py::test_tokenize_with_bos", "content"),
    (r"test_ctx_shift.py::", "content"),
    # --- excluded
    (r"test_basic.py::test_server_slots", "excluded"),
    (r"test_completion.py::test_cancel_request", "excluded"),
    (r"test_chat_completion.py::(test_chat_template$|test_chat_template_assistant_prefill|"
     r"test_chat_template_continue_final_message_vllm_compat|test_verbose_debug)", "excluded"),
    (r"test_compat_anthropic.py::test_anthropic_vision_base64_with_multimodal_model", "excluded"),
    (r"test_security.py::test_access_static_assets_without_api_key", "excluded"),
    (r"test_security.py::test_cors_proxy_only_forwards_explicit_proxy_headers", "excluded"),
    (r"test_security.py::test_cors_origins_defaults_to_localhost_with_tools_enabled", "excluded"),
    (r"test_security.py::test_local_media_file", "excluded"),
    (r"test_infill.py::", "excluded"),
    # --- real differences
    (r"test_template.py::test_reasoning", "real:reasoning-auto"),
    (r"test_template.py::test_date_inside_prompt", "real:date_string"),
    (r"test_template.py::", "real:apply-template"),
    (r"test_chat_completion.py::test_apply_chat_template", "real:named-templates"),
    (r"test_compat_anthropic.py::test_anthropic_thinking_history_in_template", "real:history-reasoning-dropped"),
    (r"test_chat_completion.py::test_chat_completion\[", "real:fingerprint"),
    (r"test_chat_completion.py::test_chat_completion_with_openai_library", "real:fingerprint"),
    (r"test_completion.py::test_completion_with_openai_library", "real:fingerprint"),
    (r"test_chat_completion.py::(test_chat_completion_stream\[|test_chat_completion_with_timings_per_token|"
     r"test_logprobs_stream)", "real:stream-role-content"),
    (r"test_tool_call.py::.*STREAMED", "real:stream-role-content"),
    (r"test_security.py::test_cors_options", "real:cors-headers"),
    (r"test_security.py::test_cors_origins_localhost_reflects", "real:cors-header-case"),
    (r"test_compat_oai_responses.py::test_responses_with_openai_library", "content"),
    (r"test_compat_oai_responses.py::test_responses_stream_with_llama_telemetry", "real:return_progress"),
    (r"test_compat_oai_responses.py::", "real:responses"),
    (r"test_completion.py::test_completion_unified", "real:n-predict-default"),
    (r"test_chat_completion.py::test_completion_with_(invalid_)?grammar", "real:grammar"),
    (r"test_chat_completion.py::test_completion_with_json_schema", "real:json_schema-param"),
    (r"test_chat_completion.py::test_completion_with_response_format", "real:json_object-schema"),
    (r"test_security.py::test_correct_api_key", "real:completions-native"),
    (r"test_security.py::test_incorrect_api_key", "real:401-type"),
    (r"test_chat_completion.py::test_context_size_exceeded", "real:ctx-exceeded-error"),
    (r"test_chat_completion.py::test_return_progress", "real:return_progress"),
    (r"test_completion.py::test_n_probs_post", "real:post_sampling_probs"),
    (r"test_completion.py::test_logit_bias\[False", "real:logit_bias-strings"),
    (r"test_ignore_eos.py::", "real:gen-settings-logit_bias"),
    (r"test_compat_anthropic.py::(test_anthropic_tool_result_with_image|test_anthropic_vision_format_accepted)",
     "real:image-400-vs-500"),
    (r"test_basic.py::test_server_props", "real:seed"),
    (r"test_completion.py::test_completion_stream_vs_non_stream", "real:seed"),
    (r"test_chat_completion.py::test_chat_template_continue_final_message_mutual_exclusion",
     "real:continue-final-and-gen-prompt"),
    (r"test_chat_completion.py::test_invalid_chat_completion_req\[messages7\]", "real:two-assistant-msgs"),
    (r"test_chat_completion.py::test_chat_completions_token_count", "real:input_tokens-endpoint"),
    (r"test_completion.py::test_completion_response_fields", "real:response_fields"),
    (r"test_completion.py::test_json_prompt_no_mtmd", "real:json-object-prompt"),
    (r"test_completion.py::test_completion_with_tokens_input", "real:multi-prompt-native"),
    (r"test_compat_anthropic.py::test_anthropic_empty_messages", "real:anthropic-empty-messages"),
    (r"test_compat_anthropic.py::test_anthropic_thinking_history_in_count_tokens", "real:history-reasoning-dropped"),
    (r"test_basic.py::test_server_model_aliases_and_tags", "real:models-aliases"),
    (r"test_basic.py::test_server_multiple_addresses", "real:multi-host"),
    (r"test_basic.py::test_no_ui", "real:no-ui"),
]

REAL = {
    "apply-template": "POST /apply-template (render messages with the chat template, no generation) is 404",
    "reasoning-auto": "--reasoning auto: llama turns thinking on where the template can think; frugal leaves the template's own default",
    "date_string": "llama passes today's date as the template variable `date_string`; frugal renders as transformers does (Llama 3's template then writes its default date)",
    "named-templates": "llama's built-in template names (--chat-template command-r); frugal takes template files only",
    "cors-header-case": "frugal's answer is right (access-control-allow-origin reflects the local origin) but hyper sends lowercase header names and utils.py looks them up case-sensitively",
    "fingerprint": "system_fingerprint is 'frugal-0.1.0'; the suite asserts llama's 'b<build>' form",
    "stream-role-content": "first chat stream chunk has delta {role, content: \"\"}; llama sends content null and utils.py rejects empty content deltas",
    "cors-headers": "preflight with --cors-origins '*': lowercase header names (the suite reads them case-sensitively), Allow-Origin '*' not the Origin, no Allow-Credentials, methods 'GET,POST,...' without spaces",
    "cors-localhost": "--cors-origins localhost is a literal origin; llama's keyword admits http://localhost, 127.0.0.1, [::1] on any port",
    "responses": "/v1/responses (OpenAI Responses API) is 404",
    "n-predict-default": "llama's -n is a default for requests that set none; frugal's --max-tokens (the wrapper's mapping) caps every request",
    "grammar": "GBNF `grammar` is ignored silently (no constraint, no 400 for an invalid grammar)",
    "json_schema-param": "top-level `json_schema` request field (llama extension) is ignored",
    "json_object-schema": "response_format {type: json_object, schema: …} ignores the schema (plain JSON object)",
    "completions-native": "POST /completions (no /v1) answers OpenAI's text_completion; in llama it is the native /completion (body has `content`)",
    "401-type": "401 error.type is 'invalid_request_error' (OpenAI's); llama says 'authentication_error'",
    "ctx-exceeded-error": "prompt too long: error.type 'invalid_request_error' without n_prompt_tokens/n_ctx; llama: 'exceed_context_size_error' with both",
    "return_progress": "`return_progress: true` streams no prompt_progress objects",
    "post_sampling_probs": "`post_sampling_probs: true` ignored: completion_probabilities keep logprob/top_logprobs, not prob/top_probs",
    "logit_bias-strings": "logit_bias keyed by strings (llama tokenizes them) is 400",
    "gen-settings-logit_bias": "/completion generation_settings has no logit_bias (llama lists the EOG biases for ignore_eos)",
    "image-400-vs-500": "image content to a text-only model is 400; llama answers 500",
    "seed": "no server-wide --seed: /props params has no seed and default sampling is not reproducible",
    "continue-final-and-gen-prompt": "add_generation_prompt + continue_final_message both true is accepted (200); llama/vLLM: 400",
    "two-assistant-msgs": "user, assistant, assistant is accepted (200); llama: 400/500",
    "input_tokens-endpoint": "POST /chat/completions/input_tokens is 404",
    "response_fields": "`response_fields` (select/flatten fields of the /completion answer) ignored",
    "json-object-prompt": "/completion prompt as an object {prompt_string: …} (llama's multimodal prompt form) is 400",
    "multi-prompt-native": "/completion with several prompts ([tokens, tokens], [tokens, \"text\"]) is 400; llama answers a list",
    "anthropic-empty-messages": "/v1/messages with messages [] is 400; llama answers 200",
    "history-reasoning-dropped": "reasoning in assistant history (Anthropic thinking blocks, reasoning_content) is not given to the template",
    "models-aliases": "/v1/models lists each --model-alias as its own model; llama lists one model with aliases[] and tags[]",
    "multi-host": "--host 127.0.0.1,::1 (several addresses) fails to start",
    "no-ui": "no --no-ui: GET / always serves the chat page",
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "results", "junit.xml")
    per_file = collections.defaultdict(collections.Counter)
    per_real = collections.Counter()
    unclassified = []
    for tc in ET.parse(path).iter("testcase"):
        f = tc.get("classname").split(".")[-1] + ".py"
        tid = f"{f}::{tc.get('name')}"
        if tc.find("skipped") is not None:
            per_file[f]["skipped"] += 1
            continue
        if tc.find("failure") is None and tc.find("error") is None:
            per_file[f]["passed"] += 1
            continue
        cls = next((c for rx, c in RULES if re.search(rx, tid)), None)
        if cls is None:
            unclassified.append(tid)
            per_file[f]["unclassified"] += 1
            continue
        if cls.startswith("real:"):
            per_real[cls[5:]] += 1
            cls = "real"
        per_file[f][cls] += 1
    cols = ["passed", "content", "excluded", "real", "skipped", "unclassified"]
    print("| file | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    tot = collections.Counter()
    for f in sorted(per_file):
        tot.update(per_file[f])
        print(f"| {f} | " + " | ".join(str(per_file[f][c]) for c in cols) + " |")
    print("| **total** | " + " | ".join(f"**{tot[c]}**" for c in cols) + " |")
    print()
    for key, n in per_real.most_common():
        print(f"- {n:3d}  {key}: {REAL[key]}")
    for t in unclassified:
        print("UNCLASSIFIED", t)
    return 1 if unclassified else 0


if __name__ == "__main__":
    sys.exit(main())
