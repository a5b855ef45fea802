"""One encode/cut for training, evaluation, SFT and generate; linear, exact detokenization
(issue 10.6)."""

import random

import numpy as np
import pytest

from stepcoder_jax import completion
from stepcoder_jax.data.prompts import PromptParts
from stepcoder_jax.models.tokenizer import tiny_tokenizer
from stepcoder_jax.rl import rollout
from stepcoder_jax.runs import evaluation as evaluate
from stepcoder_jax.sampling import SampleOutput

STOP = ("\n```", "\nQUESTION:")
# Characters of 2, 3 and 4 UTF-8 bytes: byte-level BPE splits them over several tokens.
MULTIBYTE = "x = 'é€😀'\n"


def _sp_like_tokenizer():
  """A SentencePiece-style tokenizer (Metaspace, byte fallback, leading space stripped on decode),
  the other family of real tokenizers (Llama 2, Gemma), built offline."""
  from tokenizers import Tokenizer, decoders, models, normalizers
  from transformers import PreTrainedTokenizerFast

  vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
  for b in range(256):
    vocab[f"<0x{b:02X}>"] = len(vocab)
  for piece in list("abcdefghijklmnopqrstuvwxyz()=:+'\n`") + [
    "\u2581",
    "\u2581x",
    "\u2581=",
    "de",
    "\u2581de",
    "\u2581def",
    "\u2581r",
    "\u2581re",
  ]:
    vocab.setdefault(piece, len(vocab))
  merges = [
    ("\u2581", "x"),
    ("\u2581", "="),
    ("d", "e"),
    ("\u2581", "de"),
    ("\u2581de", "f"),
    ("\u2581", "r"),
    ("\u2581r", "e"),
  ]
  tok = Tokenizer(
    models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
  )
  tok.normalizer = normalizers.Sequence(
    [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
  )
  tok.decoder = decoders.Sequence(
    [
      decoders.Replace("\u2581", " "),
      decoders.ByteFallback(),
      decoders.Fuse(),
      decoders.Strip(" ", 1, 0),
    ]
  )
  return PreTrainedTokenizerFast(
    tokenizer_object=tok,
    unk_token="<unk>",
    bos_token="<s>",
    eos_token="</s>",
    clean_up_tokenization_spaces=False,
  )


def _prefix_offsets(tok, ids):
  """The definition: the text after k tokens is decode(ids[:k]); token k's span is what it added
  (re-anchored at the first difference when it completed a character). Quadratic."""
  text, offsets = "", []
  for k in range(1, len(ids) + 1):
    cur = tok.decode(ids[:k], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    start = len(text)
    if not cur.startswith(text):
      start = next(
        (i for i, (a, b) in enumerate(zip(cur, text)) if a != b), min(len(cur), len(text))
      )
    offsets.append((start, len(cur)))
    text = cur
  return text, offsets


@pytest.mark.parametrize(
  "make_tok", [tiny_tokenizer, _sp_like_tokenizer], ids=["byte_level_bpe", "sentencepiece_like"]
)
def test_token_offsets_equal_prefix_decoding_on_random_ids(make_tok):
  tok = make_tok()
  rng = random.Random(0)
  pieces = tok(MULTIBYTE + " def x", add_special_tokens=False)["input_ids"]
  for _ in range(200):
    ids = [rng.randrange(len(tok)) for _ in range(rng.randint(0, 24))] + pieces
    rng.shuffle(ids)  # characters split across tokens, specials and invalid bytes in between
    assert completion.token_offsets(tok, ids) == _prefix_offsets(tok, ids), ids


class _CountingTokenizer:
  """The real tokenizer, counting how many token ids `decode` is given in all."""

  def __init__(self, tok):
    self.tok, self.decoded_ids = tok, 0

  def decode(self, ids, **kw):
    self.decoded_ids += len(ids)
    return self.tok.decode(ids, **kw)

  def __getattr__(self, name):
    return getattr(self.tok, name)


@pytest.mark.parametrize(
  "make_tok", [tiny_tokenizer, _sp_like_tokenizer], ids=["byte_level_bpe", "sentencepiece_like"]
)
def test_detokenization_is_linear_in_the_response_length(make_tok):
  tok = make_tok()
  line = "def add(a, b):\n    return a + b  # " + MULTIBYTE
  for n_lines in (10, 40):
    ids = tok(line * n_lines, add_special_tokens=False)["input_ids"]
    counting = _CountingTokenizer(tok)
    text, offsets = completion.token_offsets(counting, ids)
    assert text == tok.decode(ids, skip_special_tokens=True)
    # growing prefixes would decode len(ids)**2 / 2 ids (tens of thousands here)
    assert counting.decoded_ids <= 8 * len(ids), (len(ids), counting.decoded_ids)


def test_cut_finish_reasons_and_truncation():
  tok = tiny_tokenizer()
  enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]
  eos = (tok.eos_token_id,)
  assert completion.cut(tok, enc("x = 1") + list(eos), STOP, eos).finish == completion.EOS
  stopped = completion.cut(tok, enc("x = 1\n```\ny"), STOP, eos)
  assert stopped.finish == completion.STOP and stopped.text == "x = 1" and not stopped.truncated
  cut = completion.cut(tok, enc("x = 1\ny = 2"), STOP, eos)
  assert cut.finish == completion.LENGTH and cut.truncated and cut.text == "x = 1\ny = 2"
  # a stop string wholly inside the prompt is not the answer's end
  assert completion.cut(tok, enc("x = 1"), STOP, eos, context="a\n```\nb").text == "x = 1"


def _random_response(rng, tok, vocab_ids, stop_ids):
  parts = []
  for _ in range(rng.randint(0, 6)):
    r = rng.random()
    if r < 0.15:
      parts.append([tok.eos_token_id])
    elif r < 0.3:
      parts.append([rng.choice([tok.pad_token_id, tok.bos_token_id])])
    elif r < 0.45:
      parts.append(rng.choice(stop_ids))
    else:
      parts.append([rng.choice(vocab_ids) for _ in range(rng.randint(1, 5))])
  return [t for p in parts for t in p]


def test_eval_and_training_judge_the_same_text_for_random_responses():
  tok = tiny_tokenizer()
  eos = (tok.eos_token_id,)
  vocab_ids = list(range(3, len(tok)))
  stop_ids = [tok(s, add_special_tokens=False)["input_ids"] for s in (*STOP, "```", "\n")]
  heads = ["QUESTION:\nq\nANSWER:\n```python\n", "QUESTION:\nq\nANSWER:\n```python\ndef f():\n"]
  rng = random.Random(1)
  width = 48
  for _ in range(40):
    rows, responses = [], []
    for r in range(4):
      head = rng.choice(heads)
      parts = PromptParts(
        text=head,
        code_start=len(head),
        code_prefix="",
        stop=STOP,
        truncated=False,
        style="plain",
        add_special_tokens=True,
      )
      resp = _random_response(rng, tok, vocab_ids, stop_ids)[:width]
      rows.append((r, completion.encode_prompt(tok, parts), parts))
      responses.append(resp)
    # What the sampler returns: tokens through the first EOS (or the whole buffer), then padding.
    ends = [next((i + 1 for i, t in enumerate(x) if t in eos), len(x)) for x in responses]
    tokens = np.full((len(rows), width), tok.pad_token_id, np.int32)
    for r, (x, n) in enumerate(zip(responses, ends)):
      tokens[r, :n] = x[:n]
    res = SampleOutput(
      tokens=tokens,
      logprobs=np.zeros(tokens.shape, np.float32),
      lengths=np.asarray(ends, np.int32),
      finished=np.asarray([bool(n) and x[n - 1] in eos for x, n in zip(responses, ends)]),
    )
    eval_texts = evaluate.sampled_texts(tok, res, rows, eos)
    items = [rollout.Item(problem=None, stage=0, prompt=p, prompt_ids=ids) for _, ids, p in rows]
    rollout.fill_responses(items, [tokens[r, :n].tolist() for r, n in enumerate(ends)], tok, eos)
    assert [eval_texts[r] for r in range(len(rows))] == [it.completion for it in items]


def test_truncated_rate_counts_responses_cut_by_max_new_tokens():
  tok = tiny_tokenizer()
  eos = (tok.eos_token_id,)
  enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]
  head = "ANSWER:\n```python\n"
  parts = PromptParts(
    text=head,
    code_start=len(head),
    code_prefix="",
    stop=STOP,
    truncated=False,
    style="plain",
    add_special_tokens=True,
  )
  items = [rollout.Item(problem=None, stage=0, prompt=parts, prompt_ids=[1]) for _ in range(4)]
  rollout.fill_responses(
    items, [enc("x = 1") + list(eos), enc("x = 1\n```\n"), enc("x = 1"), enc("y = (")], tok, eos
  )
  assert [it.finish for it in items] == ["eos", "stop", "length", "length"]
  from stepcoder_jax.execution.job import ExecResult

  for it in items:
    it.result = ExecResult(outcome="failed", reward=-0.3, tests_passed=0, tests_total=1)
  rows = rollout.exchange_results(items, items, np.zeros((4, 1)), np.ones((4, 1)), 0, 4)
  assert rows.metrics()["truncated_rate"] == 0.5  # the metric training logs


def _sentencepiece_tokenizer(tmp_path):
  """A real SentencePiece BPE model (trained here on a few lines of code, byte fallback) behind
  transformers' Llama tokenizer: a decoder that drops the leading space of a text, as Llama-2's
  and CodeLlama's do."""
  import io

  spm = pytest.importorskip("sentencepiece")
  from transformers import LlamaTokenizer
  from transformers.tokenization_utils_sentencepiece import SentencePieceExtractor

  corpus = [
    "def f(x):\n    if x:\n        return 1\n    x = 2\n    return x\n",
    "    x = 2\n    y = 3\n",
  ] * 50
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(corpus),
    model_writer=model,
    vocab_size=320,
    model_type="bpe",
    byte_fallback=True,
    add_dummy_prefix=True,
    remove_extra_whitespaces=False,
    allow_whitespace_only_pieces=True,
    split_by_whitespace=False,
    normalization_rule_name="identity",
    character_coverage=1.0,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    minloglevel=2,
  )
  path = tmp_path / "sp.model"
  path.write_bytes(model.getvalue())
  vocab, _, merges = SentencePieceExtractor(str(path)).extract()
  return LlamaTokenizer(vocab=vocab, merges=merges)


def test_sentencepiece_response_keeps_its_indentation_after_a_cccs_prefix(tmp_path):
  from stepcoder_jax.rl import fgo

  tok = _sentencepiece_tokenizer(tmp_path)
  eos = (tok.eos_token_id,)
  head = "ANSWER:\n```python\n"
  prefix = "def f(x):\n    if x:\n        return 1\n"
  parts = PromptParts(
    text=head + prefix,
    code_start=len(head),
    code_prefix=prefix,
    stop=STOP,
    truncated=False,
    style="plain",
    add_special_tokens=True,
  )
  prompt_ids = completion.encode_prompt(tok, parts)
  answer = "    x = 2\n    return x\n"
  whole = tok(parts.text + answer)["input_ids"]
  assert whole[: len(prompt_ids)] == prompt_ids  # the prompt/response seam is a token boundary
  response = whole[len(prompt_ids) :] + list(eos)
  assert tok.convert_ids_to_tokens(response[:1]) == ["\u2581" * 4 + "x"]
  alone = tok.decode(response, skip_special_tokens=True)
  assert alone.startswith("   x") and not alone.startswith("    x")  # the first-token rule

  # Training (the rollout's cut) and evaluation judge the program with its four spaces.
  item = rollout.Item(problem=None, stage=0, prompt=parts, prompt_ids=prompt_ids)
  rollout.fill_responses([item], [response], tok, eos)
  assert item.completion == answer
  res = SampleOutput(
    tokens=np.asarray([response], np.int32),
    logprobs=np.zeros((1, len(response)), np.float32),
    lengths=np.asarray([len(response)], np.int32),
    finished=np.asarray([True]),
  )
  assert evaluate.sampled_texts(tok, res, [(0, prompt_ids, parts)], eos)[0] == answer

  # FGO's token offsets index that same text: the spans rebuild it, and line 2 (not executed)
  # masks exactly the tokens that lie on it.
  assert "".join(answer[a:b] for a, b in item.offsets) == answer
  mask = fgo.token_mask(item.completion, item.offsets, {1}, {1, 2}, "failed")
  masked = "".join(answer[a:b] for m, (a, b) in zip(mask, item.offsets) if not m)
  assert masked.strip() == "return x" and answer[item.offsets[0][0] : item.offsets[0][1]] == "    x"
