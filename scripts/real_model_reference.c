// llama.cpp's greedy chat answer on a real model, as JSON: the reference of
// crates/cli/tests/real_models.rs. Adapted from ../shared/fixtures/tools/dump_logits_gen.c (same
// settings: f32 K and V cache, flash attention off, 2 threads, CPU, the prompt in one batch, then
// one token per llama_decode call; greedy = argmax, lowest id on ties, no sampler).
//
// usage: real_model_reference MODEL.gguf N_GEN SYSTEM USER [TEMPLATE]
//   renders [system, user] ([user] when SYSTEM is empty) with the model's chat template, or with
//   llama.cpp's built-in template TEMPLATE (a name such as "gemma", for a file that carries none),
//   through llama_chat_apply_template (generation prompt added); TEMPLATE "none": USER is the raw
//   prompt, no template, SYSTEM must be empty. Tokenizes it (special tokens
//   parsed, BOS added when the vocabulary asks for it: add_bos), generates N_GEN
//   tokens greedily (without stopping at end-of-generation) and prints one JSON object:
//   rendered, add_bos, prompt_ids, greedy_ids, and per generated step top1_margin (top-1 minus
//   top-2 logit) and second_ids (the runner-up).
//
// build and run: scripts/gen_real_model_reference.sh
#include "llama.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet_log(enum ggml_log_level level, const char * text, void * ud) {
    (void)ud;
    if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static void json_string(const char * s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static void json_ints(const char * key, const int * v, int n) {
    printf("  \"%s\": [", key);
    for (int i = 0; i < n; i++) printf(i ? ", %d" : "%d", v[i]);
    printf("]");
}

int main(int argc, char ** argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s MODEL N_GEN SYSTEM USER [TEMPLATE]\n", argv[0]);
        return 1;
    }
    const int ngen = atoi(argv[2]);
    if (!getenv("DUMP_VERBOSE")) llama_log_set(quiet_log, NULL);
    llama_backend_init();
    struct llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) { fprintf(stderr, "load failed\n"); return 2; }
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    const char * tmpl = argc == 6 ? argv[5] : llama_model_chat_template(model, NULL);
    struct llama_chat_message msgs[2] = {{"system", argv[3]}, {"user", argv[4]}};
    const int first = argv[3][0] ? 0 : 1;
    static char rendered[16384];
    const bool raw = argc == 6 && strcmp(argv[5], "none") == 0;
    if (raw && !first) { fprintf(stderr, "TEMPLATE none takes no SYSTEM\n"); return 1; }
    int len = raw ? (int)strlen(argv[4])
                  : llama_chat_apply_template(tmpl, msgs + first, 2 - first, true, rendered, sizeof rendered - 1);
    if (raw && len < (int)sizeof rendered) memcpy(rendered, argv[4], len);
    if (len < 0 || len >= (int)sizeof rendered) { fprintf(stderr, "template failed\n"); return 3; }
    rendered[len] = 0;
    static llama_token toks[4096];
    const bool add_bos = llama_vocab_get_add_bos(vocab);
    const int n = llama_tokenize(vocab, rendered, len, toks, 4096, add_bos, true);
    if (n <= 0) { fprintf(stderr, "tokenize failed\n"); return 3; }

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n + ngen + 16; cp.n_batch = cp.n_ctx; cp.n_ubatch = cp.n_ctx;
    cp.n_threads = 2; cp.n_threads_batch = 2;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "ctx failed\n"); return 4; }
    struct llama_batch b = llama_batch_init(n, 0, 1);
    b.n_tokens = n;
    for (int i = 0; i < n; i++) {
        b.token[i] = toks[i]; b.pos[i] = i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = i == n - 1;
    }
    if (llama_decode(ctx, b)) { fprintf(stderr, "decode failed\n"); return 5; }
    int * gen = malloc(ngen * sizeof(int)); int * second = malloc(ngen * sizeof(int));
    float * marg = malloc(ngen * sizeof(float));
    for (int g = 0; g < ngen; g++) {
        const float * cur = llama_get_logits_ith(ctx, -1);
        int best = 0, sec = -1; float bv = cur[0], sv = -1e30f;
        for (int v = 1; v < n_vocab; v++) {
            if (cur[v] > bv) { sv = bv; sec = best; bv = cur[v]; best = v; }
            else if (cur[v] > sv) { sv = cur[v]; sec = v; }
        }
        gen[g] = best; second[g] = sec; marg[g] = bv - sv;
        if (g == ngen - 1) break;
        b.n_tokens = 1;
        b.token[0] = best; b.pos[0] = n + g; b.n_seq_id[0] = 1; b.seq_id[0][0] = 0; b.logits[0] = 1;
        if (llama_decode(ctx, b)) { fprintf(stderr, "decode (gen) failed\n"); return 6; }
    }
    printf("{\n  \"system\": "); json_string(argv[3]);
    printf(",\n  \"user\": "); json_string(argv[4]);
    printf(",\n  \"rendered\": "); json_string(rendered);
    printf(",\n  \"add_bos\": %s", add_bos ? "true" : "false");
    printf(",\n"); json_ints("prompt_ids", toks, n);
    printf(",\n"); json_ints("greedy_ids", gen, ngen);
    printf(",\n"); json_ints("second_ids", second, ngen);
    printf(",\n  \"top1_margin\": [");
    for (int g = 0; g < ngen; g++) printf(g ? ", %.6g" : "%.6g", marg[g]);
    printf("]\n}\n");
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
