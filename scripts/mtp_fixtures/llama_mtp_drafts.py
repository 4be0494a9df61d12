#!/usr/bin/env python3
"""What llama.cpp's multi-token-prediction draft guesses on a model: runs llama-server with
`--spec-type draft-mtp` (n_max guesses per round, n_min 0, p_min 0: every round drafts n_max) on the
prompt, greedy, for n_predict tokens, and reads each draft step's three best candidates and their
probabilities from its debug log (`draft candidate K, pos I: ID (P)`; P is the probability within the
draft sampler's top 10, `common_speculative_impl_draft_mtp`). Writes JSON to stdout.

usage: llama_mtp_drafts.py LLAMA_CPP_BIN MODEL.gguf PROMPT.json N_PREDICT N_MAX NAME
PROMPT.json: a fixture set's `<model>.ref_tokens.json` (its "ids")."""
import json, os, re, socket, subprocess, sys, tempfile, time, urllib.request

bin_dir, model, prompt_file, n_predict, n_max, name = sys.argv[1:7]
prompt = json.load(open(prompt_file))["ids"]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
log = tempfile.NamedTemporaryFile(prefix="llama-mtp-", suffix=".log", delete=False)
cmd = [os.path.join(bin_dir, "llama-server"), "-m", model, "--port", str(port), "-t", "2", "-c", "512",
       "-np", "1", "--spec-type", "draft-mtp", "--spec-draft-n-max", n_max, "--spec-draft-n-min", "0",
       "--spec-draft-p-min", "0", "-ctk", "f32", "-ctv", "f32", "-fa", "off", "-v", "--no-warmup"]
env = dict(os.environ, LD_LIBRARY_PATH=bin_dir)
server = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
try:
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health")
            break
        except OSError:
            time.sleep(0.2)
    req = dict(prompt=prompt, n_predict=int(n_predict), temperature=0, top_k=1, samplers=["top_k"],
               cache_prompt=False, return_tokens=True)
    r = urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{port}/completion", json.dumps(req).encode(),
        {"Content-Type": "application/json"}))
    out = json.loads(r.read())
finally:
    server.terminate()
    server.wait()
line = re.compile(r"draft candidate\s+(\d+), pos\s+(\d+):\s+(\d+) \(\s*([0-9.]+)\)")
rounds = []
for l in open(log.name, errors="replace"):
    m = line.search(l)
    if not m:
        continue
    k, pos, tok, p = int(m[1]), int(m[2]), int(m[3]), float(m[4])
    if pos == 0 and k == 0:
        rounds.append([])
    if k == 0:
        rounds[-1].append([])
    rounds[-1][-1].append([tok, p])
os.unlink(log.name)
print(json.dumps({
    "model": name,
    "how": "llama-server --spec-type draft-mtp --spec-draft-n-max %s --spec-draft-n-min 0 --spec-draft-p-min 0, "
           "f32 KV, no flash attention, 2 threads, greedy, on the dequantized (F32) copy of the file" % n_max,
    "n_max": int(n_max),
    "prompt": prompt,
    "tokens": out["tokens"],
    "draft_n": out["timings"]["draft_n"],
    "draft_n_accepted": out["timings"]["draft_n_accepted"],
    "rounds": rounds,
    "rounds_note": "per round, per guess: the draft's three best [token, probability within its top 10]",
}, indent=1))
