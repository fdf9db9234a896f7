"""`lora-studio inspect FILE.safetensors [--base MODEL]`: what a LoRA file holds, from any tool.

Reads kohya files (ours, sd-scripts, most of Civitai) with their LyCORIS modules (LoCon, LoHa, LoKr,
DoRA: the network type is named, and whether diffusers can load it), peft/diffusers files
(`unet.…lora_A.weight`) and files without metadata. Only the header is read
for names and shapes (checked against the file's size first, so a damaged file is refused as training
refuses it, not shown as a LoRA); alphas are read from the file's few 0-dim tensors.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lora_studio.core.errors import UserError
from lora_studio.core.model_kinds import NAMES
from lora_studio.engine.export import kohya, lycoris

# The cross-attention key width is the text embedding width: InvokeAI tells bases apart this way.
CONTEXT_WIDTHS = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_PEFT = re.compile(r"^(?P<module>.+?)\.(?P<what>lora_A|lora_B|lora_magnitude_vector|lora_embedding_A|lora_embedding_B)(\.[^.]+)?(\.weight)?$")
_KOHYA_PARTS = (("lora_unet_", "UNet"), ("lora_te1_", "TE1"), ("lora_te2_", "TE2"), ("lora_te_", "TE"))
_PEFT_PARTS = (("unet.", "UNet"), ("transformer.", "UNet"), ("text_encoder_2.", "TE2"), ("text_encoder.", "TE"), ("te1.", "TE1"), ("te2.", "TE2"))


def _date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (ValueError, OverflowError, OSError):
        return value


def _classify(keys: list[str]) -> tuple[dict[str, str], dict[str, str], list[str], str]:
    """(module -> part for kohya modules, module -> part for peft modules, extra keys, format)."""
    kohya_mods: dict[str, str] = {}
    peft_mods: dict[str, str] = {}
    extra: list[str] = []
    for key in keys:
        name, _, suffix = key.partition(".")
        part = next((p for prefix, p in _KOHYA_PARTS if name.startswith(prefix)), None)
        if part and suffix in lycoris.SUFFIXES:
            kohya_mods[name] = part
            continue
        m = _PEFT.match(key)
        if m and m.group("what") in ("lora_A", "lora_B"):
            module = m.group("module")
            peft_mods[module] = next((p for prefix, p in _PEFT_PARTS if module.startswith(prefix)), "UNet")
            continue
        extra.append(key)  # embeddings, Tucker cores of peft files, anything else
    if kohya_mods and not peft_mods:
        fmt = "kohya"
    elif peft_mods and not kohya_mods:
        fmt = "peft/diffusers"
    elif kohya_mods and peft_mods:
        fmt = "mixed kohya and peft"
    else:
        fmt = "LyCORIS or unknown" if extra else "empty"
    if extra and fmt in ("kohya", "peft/diffusers"):
        fmt += " with extra keys"
    return kohya_mods, peft_mods, extra, fmt


def _guess_kind(header: dict[str, Any], kohya_mods: dict, peft_mods: dict) -> str | None:
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if ("attn2_to_k.lora_down.weight" in key or "attn2.to_k.lora_A.weight" in key or "attn2.to_k.lora_down.weight" in key) and len(info["shape"]) == 2:
            kind = CONTEXT_WIDTHS.get(info["shape"][1])
            if kind:
                return kind
    if "TE2" in set(kohya_mods.values()) | set(peft_mods.values()):
        return "sdxl"
    return None


def _alphas(path: Path, keys: list[str]) -> list[float]:
    from safetensors import safe_open

    alpha_keys = [k for k in keys if k.endswith(".alpha")]
    if not alpha_keys:
        return []
    with safe_open(str(path), framework="pt") as f:
        values = {round(float(f.get_tensor(k).float().flatten()[0]), 6) for k in alpha_keys}
    return sorted(values)


def _top_tags(tag_frequency: str | None, n: int = 10) -> list[tuple[str, int]]:
    if not tag_frequency:
        return []
    try:
        per_dir = json.loads(tag_frequency)
        total: Counter = Counter()
        for tags in per_dir.values():
            total.update({str(t).strip(): int(c) for t, c in tags.items()})
    except (ValueError, AttributeError, TypeError):
        return []
    return total.most_common(n)


def inspect_file(path: str | Path, base: str | Path | None = None) -> dict[str, Any]:
    """A summary of a LoRA file as a plain dict (what `inspect` prints); verification when `base` is given."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist.", hint="Pass the path of a .safetensors LoRA file.", code="file_not_found")
    try:
        header = kohya.read_header(path)
    except OSError as e:
        raise UserError(f"{path.name} cannot be read ({e.strerror or e}).", hint="Check the file's permissions.", code="bad_file") from None
    except ValueError as e:  # as training says it: the header names tensors the file does not hold
        raise UserError(f"{path.name} cannot be read as a .safetensors file ({e}).",
                        hint="Download the model again; the file may be incomplete or damaged.", code="bad_file") from None
    raw_md = header.get("__metadata__")
    md = {k: v for k, v in raw_md.items() if isinstance(v, str)} if isinstance(raw_md, dict) else {}
    keys = [k for k in header if k != "__metadata__"]
    kohya_mods, peft_mods, extra, fmt = _classify(keys)

    kind = kohya.kind_from_metadata(md)
    source = "metadata" if kind else None
    if kind is None:
        kind = _guess_kind(header, kohya_mods, peft_mods)
        source = "key names and widths" if kind else None

    ranks = Counter()
    for key in keys:
        if key.endswith((".lora_down.weight", ".lora_A.weight", ".hada_w1_b", ".lokr_w1_b", ".lokr_w2_b")) and header[key]["shape"]:
            ranks[header[key]["shape"][0]] += 1
    suffixes: dict[str, set[str]] = {}
    for key in keys:
        name, _, suffix = key.partition(".")
        if name in kohya_mods:
            suffixes.setdefault(name, set()).add(suffix)
    # A LoRA on convolutions with a kernel (not the 1x1 proj_in / proj_out kohya's plain LoRA trains) is a LoCon.
    convs = sum(1 for k in keys if k.endswith(".lora_down.weight") and len(header[k]["shape"]) == 4 and header[k]["shape"][2:] != [1, 1])
    net_kind, dora = lycoris.network_type(suffixes, convs)
    if not kohya_mods and peft_mods:
        net_kind, dora = "lora", any("lora_magnitude_vector" in k for k in keys)
    loads, loads_note = lycoris.diffusers_loads(net_kind, dora)
    if "TE2" in peft_mods.values():  # diffusers' `text_encoder` is SDXL's first encoder
        peft_mods = {m: ("TE1" if p == "TE" else p) for m, p in peft_mods.items()}
    parts = Counter(kohya_mods.values()) + Counter(peft_mods.values())
    alphas = _alphas(path, keys)
    peft_md = md.get("lora_adapter_metadata")
    if not alphas and peft_md:  # diffusers stores the peft LoraConfig here
        try:
            alpha = json.loads(peft_md).get("lora_alpha")
            alphas = [float(alpha)] if alpha is not None else []
        except (ValueError, AttributeError):
            pass

    triggers = [t.strip() for t in md.get("modelspec.trigger_phrase", "").split(",") if t.strip()]
    triggers += [t.strip() for t in md.get("ssmd_keywords", "").split(",") if t.strip() and t.strip() not in triggers]
    info: dict[str, Any] = {
        "file": str(path),
        "size_bytes": path.stat().st_size,
        "format": fmt,
        "architecture": kind,
        "architecture_label": NAMES.get(kind, "unknown"),
        "architecture_source": source,
        "prediction": md.get("modelspec.prediction_type"),
        "ranks": sorted(ranks),
        "alphas": alphas,
        "modules": {p: parts[p] for p in ("UNet", "TE", "TE1", "TE2") if parts[p]},
        "module_count": len(kohya_mods) + len(peft_mods),
        "network_type": net_kind,
        "network_label": lycoris.TYPE_NAMES.get(net_kind, net_kind) + (" with DoRA" if dora else ""),
        "dora": dora,
        "diffusers_loads": loads,
        "diffusers_note": loads_note,
        "dtypes": sorted({header[k]["dtype"] for k in keys}),
        "extra_keys": extra[:20],
        "extra_key_count": len(extra),
        "has_metadata": bool(md),
        "metadata": {
            "name": md.get("ss_output_name"),
            "title": md.get("modelspec.title"),
            "author": md.get("modelspec.author"),
            "description": md.get("modelspec.description"),
            "steps": md.get("ss_steps"),
            "epochs": md.get("ss_epoch") or md.get("ss_num_epochs"),
            "resolution": md.get("modelspec.resolution") or md.get("ss_resolution"),
            "base_model": md.get("ss_sd_model_name"),
            "network": md.get("ss_network_module"),
            "network_args": md.get("ss_network_args"),
            "dim": md.get("ss_network_dim"),
            "alpha": md.get("ss_network_alpha"),
            "started": _date(md.get("ss_training_started_at")),
            "finished": _date(md.get("ss_training_finished_at")),
            "date": md.get("modelspec.date"),
            "model_hash": md.get("sshs_model_hash"),
            "legacy_hash": md.get("sshs_legacy_hash"),
        },
        "trigger_words": triggers,
        "top_tags": _top_tags(md.get("ss_tag_frequency")),
        "cover_image": "ssmd_cover_images" in md,
        "preview_file": path.with_name(f"{path.stem}.preview.png").is_file(),
    }
    if base is not None:
        from lora_studio.engine.export import verify

        problems = verify.verify_file(path, verify.reference_for_base(base, kind))
        info["verification"] = {"base": str(base), "verified": not problems, "problems": problems}
    return info


def format_info(info: dict[str, Any]) -> str:
    md = info["metadata"]
    lines = [
        f"{Path(info['file']).name}  ({info['size_bytes'] / 1e6:.1f} MB, {info['format']} format)",
        f"  base architecture: {info['architecture_label']}" + (f" (from the {info['architecture_source']})" if info["architecture_source"] else ""),
    ]
    if info["prediction"]:
        lines.append(f"  prediction: {info['prediction']}")
    mods = ", ".join(f"{p} {n}" for p, n in info["modules"].items()) or "none"
    lines.append(f"  modules: {info['module_count']} ({mods})")
    if info["network_type"] != "none":
        lines.append(f"  network: {info['network_label']} ({info['diffusers_note']})")
    lines.append(f"  rank: {', '.join(map(str, info['ranks'])) or '?'}   alpha: {', '.join(f'{a:g}' for a in info['alphas']) or 'not stored (= rank)'}")
    lines.append(f"  dtype: {', '.join(info['dtypes'])}")
    if info["extra_key_count"]:
        lines.append(f"  {info['extra_key_count']} keys that are not plain LoRA (LyCORIS, DoRA or other), e.g. {', '.join(info['extra_keys'][:3])}")
    if not info["has_metadata"]:
        lines.append("  no metadata (no training info, base model name or hashes)")
    for label, key in (("name", "name"), ("title", "title"), ("author", "author"), ("base model", "base_model"), ("steps", "steps"),
                       ("epochs", "epochs"), ("resolution", "resolution"), ("started", "started"), ("finished", "finished"),
                       ("description", "description"), ("hash", "model_hash")):
        if md.get(key):
            lines.append(f"  {label}: {md[key]}")
    if info["trigger_words"]:
        lines.append(f"  trigger words: {', '.join(info['trigger_words'])}")
    if info["top_tags"]:
        lines.append("  top tags: " + ", ".join(f"{t} ({c})" for t, c in info["top_tags"]))
    if "verification" in info:
        v = info["verification"]
        if v["verified"]:
            lines.append(f"  verified against {v['base']}: every key places on a module with the right shape")
        else:
            lines.append(f"  NOT verified against {v['base']}:")
            lines += [f"    - {p}" for p in v["problems"]]
    return "\n".join(lines)


def inspect_command(file: Path, *, base: Path | None = None, as_json: bool = False) -> int:
    """Print what the file holds; 1 when verification against `base` finds problems."""
    info = inspect_file(file, base)
    print(json.dumps(info, indent=2) if as_json else format_info(info))
    return 0 if info.get("verification", {}).get("verified", True) else 1
