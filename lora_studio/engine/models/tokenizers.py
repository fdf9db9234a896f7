"""The tokenizers of a base model: its own where it brings them, else the shared CLIP vocabulary.

Every Stable Diffusion text encoder (SD1's CLIP-L, SD2's OpenCLIP, both of SDXL's) uses OpenAI's CLIP
vocabulary, so `resources/tokenizer` serves them all and is never copied per model. A model may bring
its own: a diffusers folder in `tokenizer/` (and `tokenizer_2/`), a single file in its `<stem>.config/`
folder. Its own is then the one that fits its text encoder: a token id past the encoder's embedding
table crashes the first step deep inside torch, so `check_vocabularies` refuses such a pair at load time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_studio.core.errors import UserError
from lora_studio.core.resources import resource

SUBFOLDERS = ("tokenizer", "tokenizer_2")  # one per text encoder, in encoder order
# The tokens a caption is cut to: the context of every Stable Diffusion text encoder. A tokenizer folder
# says so in its tokenizer_config.json; one with only vocab.json and merges.txt does not, and transformers
# then takes "no limit" (a 10**30 that overflows the tokenizer's truncation).
CLIP_CONTEXT = 77


def tokenizer_for(kind: str, *, second: bool = False):
    """The CLIP tokenizer from the shared resources/tokenizer files (never duplicated per model).

    SD2's OpenCLIP and SDXL's second encoder pad with "!" (id 0); CLIP-L pads with the end token.
    """
    from transformers import CLIPTokenizer

    pad = {"pad_token": "!"} if (kind == "sd2" or second) else {}
    return CLIPTokenizer.from_pretrained(str(resource("tokenizer")), model_max_length=CLIP_CONTEXT, **pad)


@dataclass
class Tokenizer:
    tokenizer: Any
    folder: Path | None  # the model's own tokenizer folder, or None for the shared vocabulary


def has_own(folder: Path | None, sub: str) -> bool:
    return folder is not None and ((folder / sub / "vocab.json").is_file() or (folder / sub / "tokenizer.json").is_file())


def tokenizers_for(folder: Path | None, kind: str, model_name: str) -> list[Tokenizer]:
    """One tokenizer per text encoder: `folder`'s own `tokenizer/`, `tokenizer_2/` where present (a
    trimmed download may lack them), else the shared one."""
    from transformers import CLIPTokenizer

    out = []
    for i, sub in enumerate(SUBFOLDERS[: 2 if kind == "sdxl" else 1]):
        if not has_own(folder, sub):
            out.append(Tokenizer(tokenizer_for(kind, second=i == 1), None))
            continue
        try:
            tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder=sub, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as e:  # transformers' ways of saying "damaged files"
            raise UserError(
                f"The tokenizer in {folder.name}/{sub} of {model_name} cannot be read ({str(e).splitlines()[0][:200]}).",
                hint=f"Copy the model's tokenizer files (vocab.json and merges.txt) into {folder.name}/{sub} again, "
                     f"or delete that folder to use the standard CLIP tokenizer.",
                code="bad_model",
            ) from None
        if tokenizer.model_max_length > 1_000_000:  # no length in the folder's files
            tokenizer.model_max_length = CLIP_CONTEXT
        out.append(Tokenizer(tokenizer, folder / sub))
    return out


def check_vocabularies(tokenizers: list[Tokenizer], text_encoders: list[Any], model_name: str, own_folder: str) -> None:
    """Refuse a tokenizer whose token ids reach past its text encoder's embedding table, or whose captions
    are longer than the encoder's positions.

    `own_folder` is where this model's own tokenizer files would go (for the hint)."""
    for i, (tok, encoder) in enumerate(zip(tokenizers, text_encoders)):
        where = f"{own_folder}/{SUBFOLDERS[i]}"
        positions, length = encoder.config.max_position_embeddings, tok.tokenizer.model_max_length
        if tok.folder is not None and length > positions:  # the shared one cuts at CLIP_CONTEXT
            raise UserError(
                f"The tokenizer in {where} cuts captions at {length:,} tokens, but the text encoder of "
                f"{model_name} reads at most {positions:,}.",
                hint=f'Set "model_max_length": {positions} in {where}/tokenizer_config.json.',
                code="tokenizer_mismatch",
            )
        rows = encoder.get_input_embeddings().num_embeddings
        tokens = len(tok.tokenizer)
        if tokens <= rows:
            continue
        if tok.folder is None:
            raise UserError(
                f"The text encoder of {model_name} knows {rows:,} tokens, fewer than the {tokens:,} of the standard "
                f"CLIP tokenizer, so it needs the tokenizer it was trained with.",
                hint=f"Put that tokenizer's files (vocab.json and merges.txt) in {where} beside the model.",
                code="tokenizer_mismatch",
            )
        raise UserError(
            f"The tokenizer in {where} has {tokens:,} tokens, more than the {rows:,} the text encoder of "
            f"{model_name} knows, so it is not this model's tokenizer.",
            hint=f"Replace the files in {where} with the tokenizer that came with the model, or delete "
                 f"{where} if the model uses the standard CLIP tokenizer.",
            code="tokenizer_mismatch",
        )
