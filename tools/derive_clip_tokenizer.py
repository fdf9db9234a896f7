"""Derive the CLIP BPE tokenizer files shipped in resources/tokenizer/.

The vocabulary is the one OpenAI's CLIP (and so SD1.x, SD2.x and both SDXL encoders) uses. It is built
from `bpe_simple_vocab_16e6.txt.gz` (shipped inside the `open_clip_torch` wheel) exactly as CLIP's
SimpleTokenizer builds it: the 256 byte-level characters, the same with `</w>`, the 48,894 merges joined,
then `<|startoftext|>` and `<|endoftext|>` = 49,408 entries.

Usage: python tools/derive_clip_tokenizer.py PATH/TO/bpe_simple_vocab_16e6.txt.gz resources/tokenizer
Run once by a developer; the app never downloads anything.
"""

import gzip
import json
import sys
from pathlib import Path

from lora_studio.core.tokens import bytes_to_unicode  # the same byte map the token counter uses


def derive(gz_path: Path, out_dir: Path) -> None:
    lines = gzip.open(gz_path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


if __name__ == "__main__":
    derive(Path(sys.argv[1]), Path(sys.argv[2]))
