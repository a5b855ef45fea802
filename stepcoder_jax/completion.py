"""One way to encode a prompt and to cut a sampled response into the text that is judged.

Training (`rl/rollout.py`), evaluation (`runs/evaluation.py`), SFT (`runs/sft.py`) and `generate`
(`sampling.generate_text`) all go through this module, so the same sampled tokens are judged as
the same program wherever they were drawn. Light: imports no jax (the host side uses it).

Cutting rules (`cut`):

* Tokens are kept through the first EOS id, or through the token that completes the first stop
  string, whichever comes first: the policy emitted them, so they are trained on.
* The judged text is the decoded response without special tokens, ending before the stop string.
* A stop string may begin in the prompt (`context`): a prompt ending in a newline followed by a
  response that opens with the closing fence is an empty answer, not code.
* `finish` says why the response ended: ``eos``, ``stop`` or ``length`` (neither: the sampler ran
  out of `max_new_tokens`; training counts these as `truncated_rate`).

Detokenization (`token_offsets`) is linear in the response length: it decodes a short window
behind each new token instead of every growing prefix, and gives each token's character span in
the decoded text (what FGO needs to map lines to tokens).

Context token (`lead`): a response is decoded after the prompt's last token, not on its own, and
that token's text is then taken off. Some decoders treat the first token of a text specially
(SentencePiece tokenizers such as Llama-2's and CodeLlama's drop its leading space): decoded on
its own, a response starting with the piece "▁▁▁▁x" after a CCCS prefix would be indented by
three spaces instead of four.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

EOS, STOP, LENGTH = "eos", "stop", "length"
_REPLACEMENT = "\ufffd"  # what a decoder shows for bytes of a character not yet complete
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclasses.dataclass(frozen=True)
class Cut:
  """A response cut for judging.

  Attributes:
    ids: the kept token ids (through EOS or the token completing a stop string).
    text: the judged text (no special tokens, ends before the stop string).
    offsets: per kept token, its (start, end) character span in the decoded response; a special
      token has an empty span. Spans may extend past `text` (the stop string's tokens).
    finish: ``eos``, ``stop`` or ``length``.
  """

  ids: list[int]
  text: str
  offsets: list[tuple[int, int]]
  finish: str

  @property
  def truncated(self) -> bool:
    """The response hit max_new_tokens without an EOS or a stop string."""
    return self.finish == LENGTH


def encode(tokenizer: Any, text: str, add_special_tokens: bool = True) -> list[int]:
  """Token ids of a prompt text; an empty result falls back to BOS (a sampler needs one token)."""
  ids = list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
  if not ids:
    if tokenizer.bos_token_id is None:
      raise ValueError("the prompt encodes to no tokens and the tokenizer has no BOS token")
    ids.append(int(tokenizer.bos_token_id))
  return ids


def encode_prompt(tokenizer: Any, parts: Any) -> list[int]:
  """Token ids of a built prompt (`data.prompts.PromptParts`), with its own special-token rule."""
  return encode(tokenizer, parts.text, parts.add_special_tokens)


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
  return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _anchor_tokens(tokenizer: Any, ids: Sequence[int]) -> list[bool]:
  """Per token, whether a decode window may start at it: not a special token (skipped, so the
  next token would be decoded as the first one) and not a byte-fallback piece (``<0xE2>``: a run
  of them is decoded as a unit, so a window must hold the whole run)."""
  special = set(getattr(tokenizer, "all_special_ids", ()) or ())
  pieces = tokenizer.convert_ids_to_tokens(list(ids))
  return [
    t not in special and not (isinstance(p, str) and _BYTE_PIECE.fullmatch(p) is not None)
    for t, p in zip(ids, pieces)
  ]


def token_offsets(
  tokenizer: Any, ids: Sequence[int], lead: int | None = None
) -> tuple[str, list[tuple[int, int]]]:
  """Decoded text of `ids` (special tokens skipped) and each token's (start, end) span in it.

  `lead`: the token before `ids` (the prompt's last one). The response is then decoded as the
  continuation of that token (see the module docstring); ignored when the token cannot stand at
  the start of a window (special, or a byte piece of an incomplete character).

  The text after k tokens is defined as decode(ids[:k]); a token's span is what it added to that
  text. A character split over several tokens (multi-byte UTF-8 in byte-level BPE, byte-fallback
  pieces) shows as U+FFFD until complete; the token that completes it re-covers it, so both
  tokens touch the character.

  Linear cost: the text after k tokens is `base + decode(ids[ctx:k])`, a short window. Whenever
  the text is settled (it ends in a complete character), the window start moves up to the last
  ordinary token (not special, not a byte-fallback piece): `base` is then the settled text minus
  that token's own decoding, so decoder rules that depend on the first token (SentencePiece drops
  the leading space of a text) cancel out, and a run of byte-fallback pieces, which the decoder
  reads as a unit (an invalid run turns every byte into U+FFFD), always lies inside the window.
  """
  ids = [int(t) for t in ids]
  if lead is not None and ids:
    lead_text = _decode(tokenizer, [int(lead)])
    if _anchor_tokens(tokenizer, [int(lead)])[0] and lead_text and _REPLACEMENT not in lead_text:
      text, offsets = token_offsets(tokenizer, [int(lead)] + ids)
      if text.startswith(lead_text) and offsets[0] == (0, len(lead_text)):
        n = len(lead_text)
        return text[n:], [(max(0, a - n), max(0, b - n)) for a, b in offsets[1:]]
  anchors = _anchor_tokens(tokenizer, ids)
  text, offsets = "", []
  ctx, base = 0, ""  # window start, and decode(ids[:ctx]) as it stands in the full text
  for k in range(1, len(ids) + 1):
    cur = base + _decode(tokenizer, ids[ctx:k])
    if cur.startswith(text):
      start = len(text)
    else:  # a character still incomplete at k - 1: re-anchor at the first difference
      start = 0
      while start < min(len(cur), len(text)) and cur[start] == text[start]:
        start += 1
    offsets.append((start, len(cur)))
    text = cur
    if not text.endswith(_REPLACEMENT):  # settled: move the window up to the last anchor
      back = next((j for j in range(k - 1, ctx, -1) if anchors[j]), ctx)
      tail = _decode(tokenizer, ids[back:k])
      if back > ctx and text.endswith(tail):
        ctx, base = back, text[: len(text) - len(tail)]
  return text, offsets


def cut(
  tokenizer: Any,
  ids: Sequence[int],
  stop: Sequence[str],
  eos_ids: Sequence[int],
  context: str = "",
  lead: int | None = None,
) -> Cut:
  """Cut a sampled response (see the module docstring for the rules).

  Args:
    tokenizer: the policy's tokenizer.
    ids: the sampled ids (EOS included when drawn).
    stop: stop strings.
    eos_ids: ids that end a response.
    context: the prompt text (only its end matters: a stop string may start there).
    lead: the prompt's last token id: the response is decoded as its continuation
      (`token_offsets`), so a decoder's first-token rule does not change the response's text.
  """
  ids = [int(t) for t in ids]
  eos = set(int(e) for e in eos_ids)
  finish = LENGTH
  for i, t in enumerate(ids):
    if t in eos:
      ids, finish = ids[: i + 1], EOS
      break
  text, offsets = token_offsets(tokenizer, ids, lead)
  longest = max((len(x) for x in stop if x), default=1)
  tail = context[len(context) - (longest - 1) :] if context and longest > 1 else ""
  joined = tail + text
  end_at, end = len(text), None
  for x in stop:
    # only matches that end inside the response: a stop wholly in the prompt is not an answer
    j = joined.find(x, max(0, len(tail) - len(x) + 1)) if x else -1
    if j != -1 and j - len(tail) < end_at:
      end_at, end = max(0, j - len(tail)), j + len(x) - len(tail)
  if end is not None:
    keep = next((k + 1 for k, (_, b) in enumerate(offsets) if b >= end), len(ids))
    ids, offsets, finish = ids[:keep], offsets[:keep], STOP
  return Cut(ids=ids, text=text[:end_at], offsets=offsets, finish=finish)
