"""A tiny random causal LM (Llama or Qwen2) with a small byte-level BPE tokenizer trained here,
saved as a Hugging Face directory: what `LLaVA4D.from_lm` and `train --lm` load in tests, in
place of SmolLM2 (real weights only in bench/)."""

from __future__ import annotations

import torch

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = ["Where is the red cube at 2.5s? The red cube is at [0.10, -1.20, 0.30].",
          "Which objects move? The blue sphere moves toward +x.",
          "When did the green cylinder start moving? It started at 3.0s.",
          "How many cubes are there? There are 2 cubes.",
          # every word of the default scene inventory, so each is one token (stage 5)
          "The yellow, orange, purple, cyan and pink spheres and cylinders move toward -y."] * 20
SAMPLE = {"question": "Where is the red cube at 1.0s?", "task": "grounding",
          "answer_template": "At <time>s, the red cube is at <box>.", "answer": "",
          "slots": [{"kind": "time", "value": 1.0},
                    {"kind": "box", "value": [0, 0, 0.2, 0.3, 0.3, 0.3]}],
          "targets": [[3, 4], [29]]}  # token 29: the last of the 30-token window


def bpe_tokenizer(chat: bool, corpus: list[str] = CORPUS):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[
        "<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if chat:
        fast.chat_template = CHAT
    return fast


def lm_config(kind: str, tok):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=512, tie_word_embeddings=True,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
    return LlamaConfig(**common) if kind == "llama" else Qwen2Config(**common)


def save_lm(path, kind: str = "llama", chat: bool = True, corpus: list[str] = CORPUS) -> str:
    from transformers import AutoModelForCausalLM

    tok = bpe_tokenizer(chat, corpus)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(lm_config(kind, tok))
    lm.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return str(path)
