"""fp8 storage of the frozen base weights: one byte per weight, the same numbers as computing with the
fp8-rounded weights in full precision, and a backward that works whatever kernel the CPU picks (diffusers'
layerwise casting failed on 1x1 convolutions with one thread)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lora_studio.engine.training.fp8 import STORAGE_DTYPE, store_in_fp8, stored_bytes


def _layers():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 8, 1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(2, 8),
                         nn.Flatten(2), nn.Linear(16, 16))


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def test_forward_and_backward_match_the_fp8_rounded_weights_in_full_precision(threads):
    fp8 = _layers().requires_grad_(False)
    rounded = copy.deepcopy(fp8)
    for layer in rounded.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            layer.weight.data = layer.weight.data.to(STORAGE_DTYPE).float()
    assert store_in_fp8(fp8, torch.float32) == 3

    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, ref = fp8(x), rounded(x_ref)
    out.square().sum().backward()
    ref.square().sum().backward()
    assert torch.equal(out, ref)
    assert torch.equal(x.grad, x_ref.grad)  # backward ran through the fp8-stored layers, 1x1 conv included


def test_weights_are_stored_in_one_byte_and_never_change():
    model = _layers().requires_grad_(False)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    before = stored_bytes(model)
    store_in_fp8(model, torch.float32)
    assert before - stored_bytes(model) == 3 * matmul  # 4 bytes per weight value became 1
    stored = {n: p.clone() for n, p in model.named_parameters() if p.dtype == STORAGE_DTYPE}
    assert len(stored) == 3
    model(torch.randn(1, 8, 4, 4, requires_grad=True)).sum().backward()
    assert all(torch.equal(p.view(torch.uint8), stored[n].view(torch.uint8)) for n, p in model.named_parameters() if n in stored)
    assert store_in_fp8(model, torch.float32) == 0  # idempotent


def test_a_unet_still_reports_its_compute_dtype():
    # Pipelines (sampling during training) cast their inputs to `unet.dtype`: the first floating parameter,
    # conv_in's bias, which stays in the compute dtype. fp8 there would feed the UNet fp8 latents.
    from lora_studio.engine.models import tiny

    unet = tiny.unet().to(torch.bfloat16).requires_grad_(False)
    store_in_fp8(unet, torch.bfloat16)
    assert unet.dtype == torch.bfloat16
    assert unet.conv_in.parametrizations.weight.original.dtype == STORAGE_DTYPE
