"""Check a LoRA file the way the loaders do, against the modules of a base model's architecture.

A UI places `lora_unet_<path>` on the module at `<path>` and multiplies `lora_up @ lora_down` into its
weight; a name that maps to nothing is skipped (A1111), warned about (ComfyUI), fails the whole LoRA
past 12 such keys (Forge), or makes diffusers raise. So: every name must be a module of the base
architecture, with the shapes that module implies, and nothing else may be in the file.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from lora_studio.core.model_kinds import KINDS, shipped_config
from lora_studio.engine.export import kohya
from lora_studio.engine.export.lycoris import LOHA_SUFFIXES, LORA_SUFFIXES, SUFFIXES, TUCKER_SUFFIXES, module_type

RANK = -1  # stands for the LoRA rank in reference shapes

Shape = tuple[int, ...]
Reference = dict[str, tuple[Shape, Shape]]
FLOATS = ("F16", "BF16", "F32", "F64")


def _text_modules(encoder: torch.nn.Module):
    # Named through the canonical `text_model.…` path: transformers >= 5.6 flattens CLIPTextModel
    # (`encoder.layers.0…`) but not CLIPTextModelWithProjection; loaders expect the old path for both.
    for name, module in encoder.named_modules():
        yield kohya.canonical_te_path(name), module


def _shapes(module: torch.nn.Module) -> tuple[Shape, Shape] | None:
    # kohya's LoRAModule: Linear -> down [r, in], up [out, r]; Conv2d -> down is a conv with the module's
    # kernel [r, in, kh, kw], up a 1x1 conv [out, r, 1, 1]. Shapes come from the layer's attributes, so
    # meta-device models work.
    if isinstance(module, torch.nn.Linear):
        return (RANK, module.in_features), (module.out_features, RANK)
    if isinstance(module, torch.nn.Conv2d):
        if module.groups != 1:
            return None
        kh, kw = module.kernel_size
        return (RANK, module.in_channels, kh, kw), (module.out_channels, RANK, 1, 1)
    return None


def reference_modules(model_kind: str, unet: torch.nn.Module, text_encoders: list[torch.nn.Module]) -> Reference:
    """Every kohya name a LoRA could target (each Linear and Conv2d of the UNet and text encoders)
    -> (lora_down shape, lora_up shape), with `RANK` where the rank goes."""
    ref: Reference = {}
    for name, module in unet.named_modules():
        shapes = _shapes(module)
        if shapes and name:
            ref[kohya.kohya_name("unet", name, model_kind)] = shapes
    for part, encoder in zip(("te1", "te2"), text_encoders):
        for name, module in _text_modules(encoder):
            shapes = _shapes(module)
            if shapes and name:
                ref[kohya.kohya_name(part, name, model_kind)] = shapes
    return ref


# --- building a base model's architecture on the meta device --------------------------------------

def meta_from_folder(folder: Path, kind: str) -> tuple[Any, list[Any]]:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    # Only the configs are read: no weights are loaded, so a full SDXL builds in well under a second.
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder / "unet")))
        encoders = [CLIPTextModel(CLIPTextConfig.from_json_file(str(folder / "text_encoder" / "config.json")))]
        if kind == "sdxl":
            encoders.append(CLIPTextModelWithProjection(CLIPTextConfig.from_json_file(str(folder / "text_encoder_2" / "config.json"))))
    return unet, encoders


def reference_for_base(base: str | Path, model_kind: str | None = None) -> Reference:
    """The reference for a base model, from its architecture configs only (no weights are loaded):
    a diffusers folder's own configs, or for a single .safetensors checkpoint its kind read from the
    header and the configs the loader would use (a `<stem>.config/` folder beside it, else the shipped
    ones of that kind; see models.load_models)."""
    from lora_studio.core.errors import UserError
    from lora_studio.engine.models import load as models

    path = Path(base).expanduser()
    if path.is_dir() and (path / "model_index.json").is_file():
        kind = model_kind if model_kind in KINDS else models.detect_folder_kind(path)
        return reference_modules(kind, *meta_from_folder(path, kind))
    if path.is_file() and path.suffix.lower() == ".safetensors":
        from lora_studio.engine.models import single_file

        kind = single_file.detect_file(path).kind
        sidecar = single_file.sidecar_config(path)
        folder = sidecar if sidecar.is_dir() else shipped_config(kind)
        return reference_modules(kind, *meta_from_folder(folder, kind))
    raise UserError(
        f"The base model {path} does not exist or is not a model LoRA Studio can read.",
        hint="Pass a diffusers model folder (with model_index.json) or a .safetensors checkpoint.",
        code="model_not_found",
    )


def reference_for_kind(kind: str) -> Reference:
    """The standard architecture of a kind (the shipped SD1.5 / SD2.1 / SDXL configs)."""
    return reference_modules(kind, *meta_from_folder(shipped_config(kind), kind))


def reference_for_run(state: dict) -> tuple[Reference, str, list[str]]:
    """(reference, what it is in words, notes) for a run's checkpoint state: its base model, or the
    standard architecture of its kind when the base model has moved."""
    from lora_studio.core.errors import UserError

    kind = state["model_kind"]
    base = state.get("base_model", "")
    try:
        return reference_for_base(base, kind), f"the base model {Path(base).name}", []
    except UserError as e:
        note = f"{e.message} The file was checked against the standard {kind.upper()} architecture instead."
        return reference_for_kind(kind), f"the standard {kind.upper()} architecture", [note]


# --- the check ----------------------------------------------------------------------------------

def _split(key: str) -> tuple[str, str]:
    name, _, suffix = key.partition(".")
    return name, suffix


def check_tensors(header: dict[str, Any], reference: Reference | None) -> list[str]:
    """Problems with the tensors described by a safetensors header (names, shapes, dtypes)."""
    problems: list[str] = []
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if not entries:
        return ["The file holds no tensors."]
    modules: dict[str, dict[str, dict]] = {}
    for key, info in sorted(entries.items()):
        name, suffix = _split(key)
        if not name.startswith(kohya.PREFIXES):
            problems.append(f"The key {key} does not start with lora_unet_, lora_te_, lora_te1_ or lora_te2_: diffusers then no longer reads the file as kohya and drops the other modules, and other UIs skip it.")
            continue
        if suffix not in SUFFIXES:
            problems.append(f"The key {key} is a stray key (a LoRA, LoCon, LoHa or LoKr module holds only {', '.join(SUFFIXES)}): diffusers raises on it and ComfyUI warns \"lora key not loaded\".")
            continue
        modules.setdefault(name, {})[suffix] = info
    for name, parts in modules.items():
        shapes = {k: tuple(v["shape"]) for k, v in parts.items()}
        problem = _incomplete(name, shapes)
        if problem:
            problems.append(problem)
            continue
        alpha = parts.get("alpha")
        if alpha is None:
            problems.append(f"The module {name} has no alpha: loaders would fall back to alpha = rank and apply it at the wrong strength.")
        elif alpha["shape"] != []:
            problems.append(f"The alpha of {name} has shape {alpha['shape']}; it should be a single number (0-dim).")
        if name.startswith("lora_unet_add_embedding_"):
            # diffusers' _convert_unet_lora_key strips the index of any name containing "emb" (its SGM
            # heuristic), so it looks for `add.embedding.linear` and cannot place SDXL's add_embedding.
            problems.append(f"The module {name} cannot be placed by diffusers (its kohya converter misreads add_embedding names).")
        if reference is None:
            continue
        if name not in reference:
            problems.append(f"The name {name} maps to no module of the base model: UIs report \"lora key not loaded\" and skip it.")
            continue
        problem = _shape_problem(name, shapes, reference[name])
        if problem:
            problems.append(problem)
    dtypes = Counter(info["dtype"] for info in entries.values())
    if len(dtypes) > 1:
        problems.append(f"The tensors mix dtypes ({', '.join(f'{n} {d}' for d, n in dtypes.most_common())}); a LoRA file should use one.")
    odd = [d for d in dtypes if d not in FLOATS]
    if odd:
        problems.append(f"The file holds non-float tensors ({', '.join(odd)}).")
    return problems


def _incomplete(name: str, shapes: dict[str, Shape]) -> str | None:
    kind = module_type(shapes)
    if kind.startswith("lora"):
        missing = [k for k in LORA_SUFFIXES if k not in shapes]
        if missing:
            return f"The module {name} has no {missing[0]}: loaders cannot apply half a LoRA module."
    elif kind.startswith("loha"):
        missing = [k for k in LOHA_SUFFIXES if k not in shapes]
        if missing:
            return f"The LoHa module {name} has no {missing[0]}: loaders need all four factors."
    else:
        for w in ("lokr_w1", "lokr_w2"):
            if w not in shapes and not (f"{w}_a" in shapes and f"{w}_b" in shapes):
                return f"The LoKr module {name} has neither {w} nor {w}_a and {w}_b: loaders cannot rebuild it."
    return None


def _shape_problem(name: str, shapes: dict[str, Shape], reference: tuple[Shape, Shape]) -> str | None:
    """What is wrong with one module's shapes against its base module (None: each fits as loaders apply it)."""
    exp_down, exp_up = reference
    weight = (exp_up[0], *exp_down[1:])  # the base module's weight: [out, in] or [out, in, kh, kw]
    out, flat_in = weight[0], math.prod(weight[1:])
    kind = module_type(shapes)
    if any(k in shapes for k in TUCKER_SUFFIXES):
        return None  # Tucker-decomposed modules (not ours): the names are checked, not the cores' shapes
    if kind.startswith("lora"):
        d, u = shapes["lora_down.weight"], shapes["lora_up.weight"]
        rank = d[0] if d else -2
        if not (_fits(d, exp_down, rank) and _fits(u, exp_up, rank)):
            return f"The module {name} has shapes down {list(d)} / up {list(u)}, but the base model's module needs down {_show(exp_down)} / up {_show(exp_up)}."
    elif kind.startswith("loha"):
        w1a, w1b, w2a, w2b = (shapes[k] for k in LOHA_SUFFIXES)
        ok = all(len(s) == 2 for s in (w1a, w1b, w2a, w2b)) and w1a[0] == w2a[0] == out and w1b[1] == w2b[1] == flat_in \
            and w1a[1] == w1b[0] and w2a[1] == w2b[0]
        if not ok:
            return (f"The LoHa module {name} has factors {list(w1a)} x {list(w1b)} and {list(w2a)} x {list(w2b)}, but the base "
                    f"model's module needs [{out}, rank] x [rank, {flat_in}] for both.")
    else:
        w1 = shapes.get("lokr_w1") or _product(shapes.get("lokr_w1_a"), shapes.get("lokr_w1_b"))
        w2 = shapes.get("lokr_w2") or _product(shapes.get("lokr_w2_a"), shapes.get("lokr_w2_b"))
        ok = w1 is not None and w2 is not None and len(w1) == 2 and w1[0] * w2[0] == out and w1[1] * math.prod(w2[1:]) == flat_in \
            and (len(w2) == 2 or tuple(w2[2:]) == tuple(weight[2:]))
        if not ok:
            return (f"The LoKr module {name} has factors {w1 and list(w1)} and {w2 and list(w2)}, whose Kronecker product does not "
                    f"make the base model's weight {list(weight)}.")
    if "dora_scale" in shapes:
        expected = (out, *[1] * (len(weight) - 1))
        if shapes["dora_scale"] != expected:
            return f"The dora_scale of {name} has shape {list(shapes['dora_scale'])}; LyCORIS writes it along the output axis, {list(expected)}."
    return None


def _product(a: Shape | None, b: Shape | None) -> Shape | None:
    if a is None or b is None or len(a) != 2 or len(b) != 2 or a[1] != b[0]:
        return None
    return (a[0], b[1])


def _fits(actual: Shape, expected: Shape, rank: int) -> bool:
    return len(actual) == len(expected) and all(a == (rank if e == RANK else e) for a, e in zip(actual, expected))


def _show(shape: Shape) -> str:
    return "[" + ", ".join("rank" if s == RANK else str(s) for s in shape) + "]"


def check_metadata(metadata: Any, path: Path | None = None) -> list[str]:
    """Problems with the header metadata: every value a string, the contract's keys present, and the
    recorded hashes matching the file."""
    if metadata is None:
        return ["The file has no metadata: UIs show no training info, base model or hashes for it."]
    if not isinstance(metadata, dict):
        return ["The file's metadata is not a table of strings."]
    problems = []
    bad = sorted(k for k, v in metadata.items() if not isinstance(v, str))
    if bad:
        problems.append(f"Metadata values must all be strings; these are not: {', '.join(bad)}.")
    missing = [k for k in kohya.REQUIRED_KEYS if k not in metadata]
    if missing:
        problems.append(f"The metadata lacks {', '.join(missing)}.")
    for key in ("ss_tag_frequency", "ss_dataset_dirs", "ss_bucket_info"):
        if isinstance(metadata.get(key), str):
            try:
                json.loads(metadata[key])
            except ValueError:
                problems.append(f"The metadata {key} is not valid JSON.")
    if path is not None and not bad:
        if "sshs_model_hash" in metadata and metadata["sshs_model_hash"] != kohya.model_hash(path):
            problems.append("sshs_model_hash does not match the file's tensor data.")
        if "sshs_legacy_hash" in metadata and metadata["sshs_legacy_hash"] != kohya.legacy_hash(path):
            problems.append("sshs_legacy_hash does not match the file.")
    return problems


def verify_file(path: str | Path, reference: Reference | None) -> list[str]:
    """Every problem a loader would have with the file, as sentences; an empty list means verified.

    With `reference=None` the names are not looked up (no base model): only the format is checked.
    """
    path = Path(path)
    try:
        header = kohya.read_header(path)
    except (OSError, ValueError) as e:
        return [f"{path.name} is not a readable safetensors file ({e})."]
    problems = check_tensors(header, reference)
    problems += check_metadata(header.get("__metadata__"), path)
    return problems
