"""A CLIP tokenizer whose vocabulary is every byte plus a list of whole words.

CLIP's byte-level BPE with merges learned on the word list itself (most frequent pair first,
until every word is one symbol): a listed word becomes exactly one token, anything else falls
back to smaller pieces and single bytes, so every string still tokenizes. Small models (the toy
prior and CLIP, the tests' tiny random models) use it instead of CLIP's 49k-token vocabulary.
"""

import collections
import json
import pathlib
import re

BOS, EOS = '<|startoftext|>', '<|endoftext|>'
# The word list a tokenizer folder was made from: what its model can have learnt to read.
WORDS_FILE = 'words.json'


def learn_merges(words):
  """BPE merges [(left, right), ...] that join each of `words` into one '<word></w>' symbol.

  Args:
    words: sequence of lower-case words (characters CLIP's byte-level BPE maps to themselves).

  Returns:
    list of symbol pairs in rank order.
  """
  symbols = {w: list(w[:-1]) + [w[-1] + '</w>'] for w in dict.fromkeys(words)}
  merges = []
  while True:
    counts = collections.Counter()
    for parts in symbols.values():
      counts.update(zip(parts[:-1], parts[1:]))
    if not counts:
      return merges
    pair = min(counts, key=lambda p: (-counts[p], p))
    merges.append(pair)
    for w, parts in symbols.items():
      merged, i = [], 0
      while i < len(parts):
        if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
          merged.append(parts[i] + parts[i + 1])
          i += 2
        else:
          merged.append(parts[i])
          i += 1
      symbols[w] = merged


def vocabulary(words):
  """dict token -> id: every byte (with and without </w>), the merged symbols, BOS, EOS."""
  from transformers.models.clip import tokenization_clip  # pylint: disable=g-import-not-at-top
  chars = list(tokenization_clip.bytes_to_unicode().values())
  merged = [a + b for a, b in learn_merges(words)]
  tokens = chars + [c + '</w>' for c in chars] + merged + [BOS, EOS]
  return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def save_tokenizer(folder, words, max_length):
  """Writes a transformers.CLIPTokenizer for `words` to `folder` and returns it.

  Args:
    folder: output folder (created).
    words: sequence of lower-case words that become single tokens.
    max_length: int, the padded token length L (model_max_length).
  """
  import transformers  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / 'vocab.json').write_text(json.dumps(vocabulary(words)))
  (folder / WORDS_FILE).write_text(json.dumps(list(dict.fromkeys(words))))
  merges = ''.join(f'{a} {b}\n' for a, b in learn_merges(words))
  (folder / 'merges.txt').write_text('#version: 0.2\n' + merges)
  tokenizer = transformers.CLIPTokenizer(str(folder / 'vocab.json'), str(folder / 'merges.txt'),
                                         model_max_length=max_length)
  tokenizer.save_pretrained(str(folder))
  return tokenizer


def known_words(folder):
  """The whole words of a tokenizer folder written by save_tokenizer, or None for any other."""
  path = pathlib.Path(folder).expanduser() / WORDS_FILE
  return json.loads(path.read_text()) if path.is_file() else None


def unknown_words(text, words):
  """The words of `text` (lower-cased, split at anything but letters, digits and ') not in words."""
  known = set(words)
  return list(dict.fromkeys(w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in known))
