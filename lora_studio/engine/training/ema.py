"""An exponential moving average of the LoRA weights (`train.ema`), kept by diffusers' `EMAModel` over the
LoRA parameters only (the frozen base never changes, so averaging it would only cost memory).

The average is what a run is judged by and gives: samples, the validation loss, checkpoints' LoRA files
(and so the ranking, comparisons and exports) hold it, swapped in around them with EMAModel's
store / copy_to / restore (`judged`). A checkpoint also keeps the EMA state and the weights training
continues from, so a resume goes on exactly (`state` / `load`).

Decay: EMAModel's `min(decay, (1 + n) / (10 + n))` at step n, so the first steps average over the few
there are instead of holding the untrained weights for thousands of steps. With `train.ema_on_cpu` the
average lives in the computer's memory: no GPU memory, one copy of the LoRA off the GPU per step.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


class LoraEMA:
    def __init__(self, params: list[torch.nn.Parameter], decay: float, *, on_cpu: bool = False):
        from diffusers.training_utils import EMAModel

        self.params = list(params)
        self.on_cpu = on_cpu
        self.model = EMAModel(self.params, decay=decay)
        if on_cpu:
            self.model.to("cpu")
        self._depth = 0  # judged() nests (finish() wraps save()); EMAModel keeps one stored copy

    @torch.no_grad()
    def step(self) -> None:
        """After each optimizer step."""
        if self.on_cpu:
            # EMAModel averages a parameter only when it requires grad; the CPU copies must say so too.
            self.model.step([p.detach().to("cpu").requires_grad_(True) for p in self.params])
        else:
            self.model.step(self.params)

    @contextlib.contextmanager
    def judged(self) -> Iterator[None]:
        """Inside, the LoRA holds the averaged weights; afterwards the ones training goes on from."""
        self._depth += 1
        if self._depth == 1:
            self.model.store(self.params)
            self.model.copy_to(self.params)
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.model.restore(self.params)

    def state(self) -> dict:
        """What a checkpoint keeps: EMAModel's state, and the weights training continues from (in the order
        of the parameters; the checkpoint's LoRA file holds the average)."""
        training = self.model.temp_stored_params if self._depth else [p.detach() for p in self.params]
        return {"ema": {k: ([t.detach().cpu() for t in v] if k == "shadow_params" else v)
                        for k, v in self.model.state_dict().items()},
                "training_params": [t.detach().cpu() for t in training]}

    @torch.no_grad()
    def load(self, state: dict) -> None:
        """A checkpoint's `state()` back: the average, its step count, and the training weights into the LoRA."""
        training = state["training_params"]
        if len(training) != len(self.params) or any(t.shape != p.shape for t, p in zip(training, self.params)):
            raise ValueError("the checkpoint's EMA state does not match this LoRA")
        for p, t in zip(self.params, training):
            p.copy_(t.to(p.device, p.dtype))
        self.model.load_state_dict(state["ema"])
        self.model.to("cpu" if self.on_cpu else self.params[0].device)
