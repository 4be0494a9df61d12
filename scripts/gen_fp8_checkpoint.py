#!/usr/bin/env python3
"""A tiny block-scaled FP8 checkpoint (as DeepSeek-V3, Kimi K2 and GLM publish theirs) and the values
a loader must decode from it, computed with ml_dtypes (independently of frugal's decoder).

Writes crates/checkpoint/tests/data/fp8/:
  config.json           qwen2-shaped, 1 layer, quantization_config {quant_method: fp8, weight_block_size [128, 128]}
  model.safetensors     every 2-D projection as F8_E4M3 + `<name>_scale_inv` (F32, one per 128x128 block,
                        partial blocks at the edges); embeddings and norms BF16
  expected.safetensors  each FP8 weight dequantized (fp8 -> f32, times its block's scale) and rounded to BF16
                        (round to nearest even), the type the loader keeps it in
  e4m3.json             all 256 E4M3 bytes decoded to f32 bit patterns (NaN as null)

Needs numpy, ml_dtypes, safetensors (pip). Run: python3 scripts/gen_fp8_checkpoint.py
"""
import json, os, sys
import numpy as np
import ml_dtypes
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "checkpoint", "tests", "data", "fp8")
rng = np.random.default_rng(1234)
H, FF, VOCAB, HEADS, KV = 160, 136, 64, 2, 1
HD = H // HEADS
B = 128

def fp8_weight(rows, cols):
    # Random bytes over every finite code, plus a few special ones (subnormals, the largest, zero).
    codes = rng.integers(0, 256, size=(rows, cols), dtype=np.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0x01  # no NaN in weights the model runs
    codes[0, :8] = [0x00, 0x80, 0x01, 0x07, 0x08, 0x7E, 0xFE, 0x38]
    w = codes.view(ml_dtypes.float8_e4m3fn)
    scales = rng.uniform(0.5, 2.0, size=(-(-rows // B), -(-cols // B))).astype(np.float32) / 64
    full = np.repeat(np.repeat(scales, B, axis=0), B, axis=1)[:rows, :cols]
    deq = w.astype(np.float32) * full
    return w, scales, deq.astype(ml_dtypes.bfloat16)

def main():
    os.makedirs(OUT, exist_ok=True)
    tensors, expected = {}, {}
    bf16 = lambda a: a.astype(ml_dtypes.bfloat16)
    tensors["model.embed_tokens.weight"] = bf16(rng.standard_normal((VOCAB, H)).astype(np.float32))
    tensors["model.norm.weight"] = bf16(np.ones(H, np.float32))
    p = "model.layers.0."
    tensors[p + "input_layernorm.weight"] = bf16(np.ones(H, np.float32))
    tensors[p + "post_attention_layernorm.weight"] = bf16(np.ones(H, np.float32))
    for name, (rows, cols) in {
        "self_attn.q_proj": (HEADS * HD, H), "self_attn.k_proj": (KV * HD, H),
        "self_attn.v_proj": (KV * HD, H), "self_attn.o_proj": (H, HEADS * HD),
        "mlp.gate_proj": (FF, H), "mlp.up_proj": (FF, H), "mlp.down_proj": (H, FF),
    }.items():
        w, s, deq = fp8_weight(rows, cols)
        tensors[p + name + ".weight"] = w
        tensors[p + name + ".weight_scale_inv"] = s
        expected[p + name + ".weight"] = deq
    for name, n in {"q_proj": HEADS * HD, "k_proj": KV * HD, "v_proj": KV * HD}.items():
        tensors[p + "self_attn." + name + ".bias"] = bf16(rng.standard_normal(n).astype(np.float32))
    save_file(tensors, os.path.join(OUT, "model.safetensors"), metadata={"format": "pt"})
    save_file(expected, os.path.join(OUT, "expected.safetensors"))
    config = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": H,
        "intermediate_size": FF, "num_attention_heads": HEADS, "num_key_value_heads": KV,
        "num_hidden_layers": 1, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "vocab_size": VOCAB, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                "weight_block_size": [B, B]},
    }
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    codes = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    bits = [None if np.isnan(v) else int(np.float32(v).view(np.uint32)) for v in codes]
    with open(os.path.join(OUT, "e4m3.json"), "w") as f:
        json.dump({"ml_dtypes": ml_dtypes.__version__, "f32_bits": bits}, f)

if __name__ == "__main__":
    sys.exit(main())
