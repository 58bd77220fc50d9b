"""A word-level Hugging Face tokenizer for the lab, with a chat template.

Every lab value, operator, step label and cue word is one token, so a tiny model spends its
capacity on the task rather than on spelling. It is a real ``PreTrainedTokenizerFast``: transformers,
TRL, PEFT and vLLM load it from disk like any hub tokenizer. Text is whitespace-separated words;
``decode`` joins tokens with single spaces, so ``decode(encode(t)) == t`` for normalised lab text.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from effreason.format import THINK_END, THINK_START
from effreason.lab.task import MAX_STEPS, OPS

PAD, UNK, IM_START, IM_END = "<pad>", "<unk>", "<|im_start|>", "<|im_end|>"

#: Words beyond values and step labels: structure, cue words, and words later recipes put in prompts
#: (length levels for TLDR, "think for N tokens" for L1), so those stay in-vocabulary.
WORDS = (
    "system user assistant start mod ( ) ; : , . = yes wait hmm let me check recompute that is wrong "
    "double from the alternatively compute again answer \\boxed{ } level short medium long think for "
    "tokens budget be concise brief detailed"
).split()

#: Integers 0..MAX_NUMBER are single tokens (values, operands, and token budgets in prompts).
MAX_NUMBER = 512

# Qwen-style turns. Spaces separate words; the whitespace pre-tokenizer ignores how many.
# {% generation %} marks assistant tokens for TRL's assistant-only loss.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "<|im_start|>assistant {% generation %}{{ message['content'] }} <|im_end|>{% endgeneration %} "
    "{%- else -%}"
    "<|im_start|>{{ message['role'] }} {{ message['content'] }} <|im_end|> "
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant {% endif -%}"
)


def lab_vocab() -> list[str]:
    """The vocabulary in id order (ids are stable: the shipped checkpoint depends on them)."""
    words = [PAD, UNK, IM_START, IM_END, THINK_START, THINK_END]
    words += WORDS + list(OPS) + [f"s{i}" for i in range(1, MAX_STEPS + 1)]
    words += [str(n) for n in range(MAX_NUMBER + 1)]
    if len(set(words)) != len(words):
        raise AssertionError("lab vocabulary has duplicates")
    return words


def build_lab_tokenizer() -> PreTrainedTokenizerFast:
    """Build the lab tokenizer from scratch (no files, no network)."""
    vocab = {w: i for i, w in enumerate(lab_vocab())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # WordPiece's decoder puts one space between tokens (none are "##" continuations).
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK,
        pad_token=PAD,
        eos_token=IM_END,
        additional_special_tokens=[IM_START],
        model_max_length=512,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    # The thinking markers stay visible in decoded text (not special), as in R1 / Qwen3.
    tok.add_tokens([THINK_START, THINK_END])
    tok.chat_template = CHAT_TEMPLATE
    return tok
