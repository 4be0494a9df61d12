#!/usr/bin/env python3
"""The shared ../shared/fixtures/tools/convert_hf_tiny.py (llama.cpp's convert_hf_to_gguf.py with the toy
tokenizer's pre-tokenizer name forced to $GGUF_PRE), plus what these three architectures need for a toy BPE
tokenizer; llama.cpp's converter itself is not modified:

* Gemma3 (conversion/gemma.py): with no tokenizer.model it already takes the BPE path (_set_vocab_gpt2), but
  it cuts token_embd to len(tokenizer.json vocab) + len(added_tokens) rows (515) while the token list is padded
  to vocab_size (576), and llama.cpp then refuses the file (token_embd must have n_vocab rows). Here the rows
  are kept (all 576, as HF's embedding and the tied output have them).
* GLM-4.5 (conversion/glm.py, _set_vocab_glm) looks up GLM's own special tokens ([gMASK], <|user|>,
  <|observation|>), which the toy tokenizer lacks: the generic BPE path (_set_vocab_gpt2) is used instead.
* ERNIE 4.5 (conversion/ernie.py) insists on a SentencePiece tokenizer.model: the generic BPE path as well.

usage: LLAMA_CPP=<llama.cpp source> GGUF_PRE=qwen2 python convert_labs.py <hf_dir> --outfile X.gguf --outtype f32
"""
import os, sys
LC = os.environ["LLAMA_CPP"]
sys.path.insert(0, LC)
sys.path.insert(1, os.path.join(LC, "gguf-py"))
import gguf  # noqa: E402,F401
import conversion.base as base  # noqa: E402
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: os.environ.get("GGUF_PRE", "qwen2")

import conversion.gemma as gemma  # noqa: E402
_gemma3_mt = gemma.Gemma3Model.modify_tensors
def _gemma3_modify_tensors(self, data_torch, name, bid):
    if "embed_tokens.weight" in name:   # no OOV-row cut (and embeddings get no norm shift anyway)
        yield from base.TextModel.modify_tensors(self, data_torch, name, bid)
        return
    yield from _gemma3_mt(self, data_torch, name, bid)
gemma.Gemma3Model.modify_tensors = _gemma3_modify_tensors

import conversion.glm as glm  # noqa: E402
glm.Glm4MoeModel.set_vocab = lambda self: self._set_vocab_gpt2()
import conversion.ernie as ernie  # noqa: E402
ernie.Ernie4_5Model.set_vocab = lambda self: self._set_vocab_gpt2()

import convert_hf_to_gguf  # noqa: E402
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[1:]
convert_hf_to_gguf.main()
