"""fp8 storage of the frozen base weights (the memory option behind the 6 GB SDXL target): each Linear and
Conv2d weight is stored as float8_e4m3fn, one byte per value, and upcast to the compute dtype whenever its
layer runs.

Why not diffusers' layerwise casting (`enable_layerwise_casting`): its hooks cast a module's parameters in
place, up before its forward and back down to fp8 after it. An op that saved the weight Parameter itself
for backward then finds fp8 there when backward runs. Which kernels save the Parameter itself differs by
device and thread count: on a CPU with one thread, every 1x1 convolution (the SD1 attention blocks'
proj_in / proj_out) failed in backward with "expected scalar type Float but found Float8_e4m3fn".
A parametrization (`torch.nn.utils.parametrize`) instead hands each forward a fresh upcast tensor, so
whatever a kernel saves for backward stays in the compute dtype and the stored fp8 weight is never
touched. What backward keeps is the same either way: the upcast weights of the layers it still has to
go through (all of them without gradient checkpointing; one block's with it).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

STORAGE_DTYPE = torch.float8_e4m3fn


class Upcast(nn.Module):
    """The parametrization: the stored fp8 weight, as the compute dtype, each time the layer reads it."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.to(self.dtype)


def store_in_fp8(module: nn.Module, compute_dtype: torch.dtype) -> int:
    """Store every Linear and Conv2d weight in `module` in fp8 where it is (call it before moving the module
    to the GPU, so the full-precision weights never get there); biases and norms take the compute dtype.
    Returns how many weights were converted. LoRA adapters are injected afterwards and stay fp32."""
    count = 0
    for layer in list(module.modules()):
        if not isinstance(layer, (nn.Linear, nn.Conv2d)) or parametrize.is_parametrized(layer, "weight"):
            continue
        if layer.weight.requires_grad:
            continue  # a trainable weight (a LoRA adapter's) is not a frozen base weight
        stored = nn.Parameter(layer.weight.detach().to(STORAGE_DTYPE), requires_grad=False)
        del layer.weight
        layer.weight = stored
        # unsafe: the parametrization changes the dtype, which the safe mode forbids.
        parametrize.register_parametrization(layer, "weight", Upcast(compute_dtype), unsafe=True)
        if layer.bias is not None:
            layer.bias.data = layer.bias.data.to(compute_dtype)
        count += 1
    return count


def stored_bytes(module: nn.Module) -> int:
    """Bytes of all parameters as stored (fp8 weights count one byte each)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())
