"""The default model's word-level tokenizer (words, single digits, single symbols, slot tokens),
and `render_text`, which turns generated ids into text for it or for any pretrained LM's
tokenizer.

Built with `tokenizers` from the instruction vocabulary and saved as `tokenizer.json`, loaded as
a `PreTrainedTokenizerFast`. Numbers go digit by digit, so any coordinate is expressible with a
vocabulary of ~200. `detokenize` restores the spacing of the generated text ("At 2.5s, ...").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SLOT_BOX = "<box>"
SLOT_TIME = "<time>"
SPECIAL = ("<pad>", "<s>", "</s>", "<unk>", "<image>", "<box>", "<time>")
EXTRA = ("ASSISTANT", ":", "USER", "?", "!", "'")
_SPLIT = r"<image>|<box>|<time>|<pad>|<s>|</s>|<unk>|[A-Za-z]+|\d|[^\sA-Za-z\d]"


def build_tokenizer(vocabulary: Sequence[str]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over SPECIAL + EXTRA + `vocabulary` (ids in that order)."""
    words: list[str] = []
    for w in (*SPECIAL, *EXTRA, *vocabulary):
        if w not in words:
            words.append(w)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
    ])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": ["<image>", "<box>", "<time>"]})
    return fast


def _is_num(tok: str) -> bool:
    return tok.isdigit() or tok in ("<time>",)


def detokenize(tokens: Sequence[str]) -> str:
    """Join word-level tokens with the spacing the instruction data is written with."""
    out = ""
    prev = ""
    prev2 = ""
    for tok in tokens:
        glue = (
            not out
            or tok in (".", ",", "?", "!", "]", ":", ")")
            or prev in ("[", "(")
            or (tok.isdigit() and (prev.isdigit() or (prev == "." and prev2.isdigit())))
            or (tok == "s" and _is_num(prev))
            or (prev in ("-", "+") and prev2 in ("", "[", ",", "toward", "(") and tok != " ")
        )
        # "-" after "[" or "," is a sign: glued to the number that follows (handled above)
        out += tok if glue else " " + tok
        prev2, prev = prev, tok
    return out


def render_text(tokenizer: Any, ids: Sequence[int], keep: Sequence[int]) -> str:
    """Generated `ids` -> text, the special tokens in `keep` (the `<box>`/`<time>` slots) kept
    in place for their values and other special tokens dropped. A word-level tokenizer (the
    default's) is joined by `detokenize`; any other is decoded by the tokenizer between the
    kept tokens, so byte-level BPE spacing comes out as the LM wrote it."""
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    if type(model).__name__ == "WordLevel":
        return detokenize(tokenizer.convert_ids_to_tokens(list(ids)))
    keep = set(int(k) for k in keep)
    out, run = "", []
    for tid in ids:
        if int(tid) in keep:
            out += tokenizer.decode(run, skip_special_tokens=True)
            out += tokenizer.convert_ids_to_tokens(int(tid))
            run = []
        else:
            run.append(int(tid))
    return (out + tokenizer.decode(run, skip_special_tokens=True)).strip()
