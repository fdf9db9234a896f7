"""`lora-studio device`: the GPU training would use, as torch sees it. The app asks this once (in a child
process, since the window never imports torch) to say whether a run's settings fit."""

from __future__ import annotations

import json


def device_info() -> dict:
    """{"gpu": name ("" without CUDA), "total_bytes", "bf16", "count", "torch"}: the first CUDA device, which
    is the one a single-GPU run trains on."""
    import torch

    info = {"gpu": "", "total_bytes": 0, "bf16": False, "count": 0, "torch": torch.__version__}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, total_bytes=int(props.total_memory), bf16=bool(torch.cuda.is_bf16_supported()),
                    count=torch.cuda.device_count())
    return info


def device_command(as_json: bool = False) -> int:
    info = device_info()
    if as_json:
        print(json.dumps(info))
    elif info["gpu"]:
        print(f"{info['gpu']}: {info['total_bytes'] / 1e9:.1f} GB, bf16 {'yes' if info['bf16'] else 'no'} "
              f"({info['count']} CUDA device{'s' if info['count'] != 1 else ''}; torch {info['torch']})")
    else:
        print(f"No CUDA GPU: training runs on the CPU (torch {info['torch']}).")
    return 0
