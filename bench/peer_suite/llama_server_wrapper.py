#!/usr/bin/env python3
"""Stand-in for llama-server: takes llama-server's command-line flags (as llama.cpp's
tools/server/tests/utils.py passes them) and execs `frugal serve` with the equivalents.

Environment:
  FRUGAL_BIN          the frugal binary (default: target/debug/frugal next to this repo)
  FRUGAL_PEER_MODEL   the one model every -m/-hf/... maps to, since nothing can be fetched
                      (default: ~/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf)
  FRUGAL_PEER_THREADS worker threads when the suite passes no -t (default: frugal's own,
                      all available cores)
  FRUGAL_PEER_N_PREDICT cap (default): -n N -> --max-tokens N, a cap on every request, where
                      llama's -n is only the default of requests that set none; drop: no cap
  FRUGAL_PEER_TEMPLATES directory of Jinja templates used for llama's built-in template
                      names (default: /work/shared/fixtures/templates)

Everything frugal has no equivalent for is dropped and listed on stderr.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FRUGAL = os.environ.get("FRUGAL_BIN", os.path.join(REPO, "target", "debug", "frugal"))
MODEL = os.path.expanduser(os.environ.get(
    "FRUGAL_PEER_MODEL", "~/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
TEMPLATES = os.environ.get("FRUGAL_PEER_TEMPLATES", "/work/shared/fixtures/templates")

# llama.cpp's built-in template names (--chat-template NAME) -> a Jinja file where one exists.
# None: the served model's own template already is that format (SmolLM2 uses ChatML).
BUILTIN_TEMPLATES = {
    "llama3": "meta-llama-Llama-3.1-8B-Instruct.jinja",
    "chatml": None,
    "deepseek3": "deepseek-ai-DeepSeek-V3.1.jinja",
    "deepseek-r1": "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
    "hermes-3": "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
}

# llama-server flags that take a value (those frugal lacks included, so that the value is
# dropped with the flag).
VALUE_FLAGS = {
    "--host", "--port", "-m", "--model", "-hf", "-hfr", "--hf-repo", "-hff", "--hf-file",
    "-mu", "--model-url", "-md", "--model-draft", "-hfd", "-hfrd", "--hf-repo-draft",
    "-hffd", "--hf-file-draft", "-c", "--ctx-size", "-np", "--parallel", "-n", "--n-predict",
    "--predict", "-a", "--alias", "--tags", "--api-key", "--api-key-file", "-t", "--threads",
    "-tb", "--threads-batch", "--chat-template-file", "--chat-template",
    "--reasoning-format", "--reasoning-budget", "--reasoning", "--cors-origins",
    "--slot-save-path", "--seed", "-s", "--temp", "-b", "--batch-size", "-ub",
    "--ubatch-size", "-ngl", "--n-gpu-layers", "--gpu-layers", "-ngld", "--n-gpu-layers-draft",
    "--log-file", "--log-verbosity", "-lv", "--models-dir", "--models-max", "--models-preset",
    "--pooling", "-ctk", "--cache-type-k", "-ctv", "--cache-type-v", "-fa", "--flash-attn",
    "--grp-attn-n", "--grp-attn-w", "--lora", "--lora-scaled", "--spec-type",
    "--spec-draft-n-max", "--spec-draft-n-min", "--spec-synth-len", "--spec-synth-rates",
    "--draft-max", "--draft-min", "--draft-p-min", "--draft", "--draft-n", "--mmproj",
    "--mmproj-url", "--media-path", "--sleep-idle-seconds", "--cache-ram", "-cram",
    "--tools", "--tools-runtime", "--mcp-servers-config", "--mcp-servers-json",
    "--cpu-mask", "-C", "--keep", "--timeout", "--threads-http", "--cache-reuse",
    "-cpent", "--path", "--api-prefix", "--ctx-checkpoints",
}


def main(argv):
    out = []          # frugal serve flags
    dropped = []      # llama flags without an equivalent
    notes = []
    threads = None
    ctx = slots = None
    unified = False
    cors = None
    host = port = None
    i = 0
    while i < len(argv):
        flag = argv[i]
        val = None
        if "=" in flag and flag.startswith("--"):
            flag, val = flag.split("=", 1)
        elif flag in VALUE_FLAGS and i + 1 < len(argv):
            i += 1
            val = argv[i]
        elif flag.startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("--") \
                and not (argv[i + 1].startswith("-") and not argv[i + 1][1:2].isdigit()):
            # an unknown flag followed by what looks like its value
            i += 1
            val = argv[i]
        i += 1

        if flag == "--host":
            host = val
        elif flag == "--port":
            port = val
        elif flag in ("-m", "--model", "-hf", "-hfr", "--hf-repo", "-hff", "--hf-file",
                      "-mu", "--model-url"):
            notes.append(f"{flag} {val} -> {MODEL}")
        elif flag in ("-c", "--ctx-size"):
            ctx = int(val)
        elif flag in ("-np", "--parallel"):
            slots = int(val)
        elif flag in ("-kvu", "--kv-unified"):
            unified = True
        elif flag in ("-n", "--n-predict", "--predict"):
            # llama's -n is the default for requests that set no limit; frugal's --max-tokens
            # caps every request. FRUGAL_PEER_N_PREDICT=drop leaves it out instead.
            if os.environ.get("FRUGAL_PEER_N_PREDICT", "cap") == "drop":
                dropped.append(f"{flag} {val}")
            elif val is not None and int(val) > 0:
                out += ["--max-tokens", val]
        elif flag in ("-a", "--alias"):
            for name in val.split(","):
                if name.strip():
                    out += ["--model-alias", name.strip()]
        elif flag == "--api-key":
            for key in val.split(","):
                out += ["--api-key", key]
        elif flag == "--api-key-file":
            out += ["--api-key-file", val]
        elif flag in ("-t", "--threads"):
            threads = val
        elif flag == "--chat-template-file":
            out += ["--chat-template-file", val]
        elif flag == "--chat-template":
            if val in BUILTIN_TEMPLATES:
                f = BUILTIN_TEMPLATES[val]
                if f is None:
                    notes.append(f"--chat-template {val}: the model's own template is already {val}")
                elif os.path.exists(os.path.join(TEMPLATES, f)):
                    out += ["--chat-template-file", os.path.join(TEMPLATES, f)]
                    notes.append(f"--chat-template {val} -> {f}")
                else:
                    dropped.append(f"--chat-template {val} (no {f})")
            else:
                dropped.append(f"--chat-template {val} (no template file for this built-in name)")
        elif flag == "--reasoning-format":
            if val in ("deepseek", "none"):
                out += ["--reasoning-format", val]
            elif val == "deepseek-legacy":
                out += ["--reasoning-format", "deepseek"]
            else:
                dropped.append(f"{flag} {val}")
        elif flag == "--reasoning-budget":
            out += ["--reasoning-budget", val]
        elif flag in ("--reasoning", "--chat-template-kwargs"):
            out += [flag, val]
        elif flag == "--cors-origins":
            cors = val
        elif flag in ("--cpu-mask", "-C"):
            out += ["--cpu-mask", val]
        else:
            dropped.append(flag if val is None else f"{flag} {val}")

    # llama-server's --ctx-size is the whole KV cache, shared by --parallel slots of
    # ctx/parallel tokens each (each may use all of it with --kv-unified); frugal's -c is the
    # context of one sequence and --kv-tokens the cache.
    if slots is not None and slots > 0:
        out += ["--max-seqs", str(slots)]
    if ctx is not None and ctx > 0:
        per_seq = ctx if unified or not slots or slots <= 0 else ctx // slots
        out += ["-c", str(per_seq), "--kv-tokens", str(ctx)]
        notes.append(f"--ctx-size {ctx} --parallel {slots}{' --kv-unified' if unified else ''}"
                     f" -> -c {per_seq} --kv-tokens {ctx}")
    elif ctx is not None:
        notes.append(f"--ctx-size {ctx}: the model's own context (frugal's default)")
    if host is not None:
        out += ["--host", host]
    if port is not None:
        out += ["--port", port]
    if threads is None:
        threads = os.environ.get("FRUGAL_PEER_THREADS")
    if threads is not None and int(threads) > 0:
        out += ["-t", threads]
    # llama-server answers CORS for any origin unless told otherwise; frugal's default is closed.
    out += ["--cors-origins", cors if cors is not None else "*"]

    cmd = [FRUGAL, "serve", *out, MODEL]
    for n in notes:
        print(f"llama_server_wrapper: {n}", file=sys.stderr)
    if dropped:
        print("llama_server_wrapper: dropped (no frugal equivalent): " + " ".join(dropped),
              file=sys.stderr)
    print("llama_server_wrapper: exec " + " ".join(cmd), file=sys.stderr, flush=True)
    os.execv(FRUGAL, cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
