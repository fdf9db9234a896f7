"""The reference the benchmark compares our engine with: diffusers' LoRA training recipe, as one step.

`ReferenceLoop` follows `examples/text_to_image/train_text_to_image_lora.py` (SD1.x/SD2.x) and its SDXL
sibling `train_text_to_image_lora_sdxl.py`, as of diffusers 0.2x-0.4x, with everything around the step
(argument parsing, datasets, checkpoints, validation) left out:

- the frozen UNet and text encoder(s) in the mixed-precision dtype (`weight_dtype`); the VAE in
  `weight_dtype` too for SD1/SD2, in fp32 for SDXL (the SDXL script's default without a fixed VAE);
- `unet.add_adapter(LoraConfig(r, lora_alpha, init_lora_weights="gaussian",
  target_modules=["to_k", "to_q", "to_v", "to_out.0"]))`, trainable (LoRA) parameters cast to fp32;
- AdamW (betas 0.9 / 0.999, weight decay 1e-2, eps 1e-8), `train.lr_scheduler` with `train.warmup_steps`
  (the scripts' `--lr_scheduler` / `--lr_warmup_steps`),
  `accelerator.prepare(unet, optimizer, lr_scheduler)`;
- every step: VAE-encode the pixels (`latent_dist.sample() * scaling_factor`), run the text
  encoder(s) on the token ids, `torch.randn_like` noise, uniform timesteps, `DDPMScheduler.add_noise`,
  the ε or v target, UNet forward, `F.mse_loss(pred.float(), target.float())` (Min-SNR weighted per
  image with `--snr_gamma`, which `train.min_snr_gamma` stands for), the script's two
  read-backs of the loss (`avg_loss.item()` for `train_loss`, `loss.detach().item()` for the progress
  bar), `accelerator.backward`, `clip_grad_norm_`, `optimizer.step()`, `lr_scheduler.step()`,
  `optimizer.zero_grad()`.

Tokenization happens in the scripts' dataset transform, so `prepare_batch` (the data loader's work) does
it; the benchmark excludes it from both sides' timings, as it excludes image decoding.

The constructor mirrors `lora_studio.engine.training.step.Trainer(models, cfg, accelerator)` so the benchmark
builds both sides from the same `Models` and `Config`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import compute_snr
from peft import LoraConfig

from lora_studio.core.config import Config
from lora_studio.engine.models.load import Models

TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]
FF_MODULES = ["ff.net.0.proj", "ff.net.2"]


def _tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    # The scripts' `tokenize_captions`: pad to the model length, truncate, ids only.
    return tokenizer(
        captions, max_length=tokenizer.model_max_length, padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids


class ReferenceLoop:
    """One training step of diffusers' `train_text_to_image_lora(_sdxl).py`, on `models`, with `cfg`'s settings."""

    name = "reference"

    def __init__(self, models: Models, cfg: Config, accelerator):
        self.models, self.cfg, self.accelerator = models, cfg, accelerator
        self.device = accelerator.device
        self.kind = models.kind
        # "For mixed precision training we cast all non-trainable weights to half-precision."
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

        unet, vae, tes = models.unet, models.vae, list(models.text_encoders)
        for m in (unet, vae, *tes):
            m.requires_grad_(False)
        unet.to(self.device, dtype=self.weight_dtype)
        # train_text_to_image_lora.py casts the VAE too; the SDXL script keeps it in fp32 (its fp16 overflows).
        vae.to(self.device, dtype=torch.float32 if self.kind == "sdxl" else self.weight_dtype)
        for te in tes:
            te.to(self.device, dtype=self.weight_dtype)

        net = cfg.network
        targets = TARGET_MODULES + (FF_MODULES if net.targets == "attention+ff" else [])
        unet.add_adapter(LoraConfig(r=net.rank, lora_alpha=net.alpha, init_lora_weights="gaussian", target_modules=targets))
        # diffusers.training_utils.cast_training_params: the trainable (LoRA) parameters in fp32.
        for p in unet.parameters():
            if p.requires_grad:
                p.data = p.to(torch.float32)
        if cfg.train.gradient_checkpointing:
            unet.enable_gradient_checkpointing()

        self.params = [p for p in unet.parameters() if p.requires_grad]
        t = cfg.train
        optimizer = torch.optim.AdamW(self.params, lr=t.learning_rate, betas=(0.9, 0.999), weight_decay=t.weight_decay, eps=1e-8)
        # The scripts' --lr_scheduler / --lr_warmup_steps (their default: constant, no warm-up).
        lr_scheduler = get_scheduler(t.lr_scheduler, optimizer=optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=t.max_steps)
        self.unet, self.optimizer, self.lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
        self.vae, self.text_encoders, self.tokenizers = vae, tes, list(models.tokenizers)
        # DDPMScheduler.from_pretrained(..., subfolder="scheduler") in the scripts: the same config.
        self.noise_scheduler = DDPMScheduler.from_config(models.scheduler_config)
        self.train_loss = 0.0
        self.last_loss = 0.0

    # -- what the scripts' dataset transform and collate_fn produce -------------------------------

    def prepare_batch(self, pixel_values: torch.Tensor, captions: list[str], original_sizes, crop_top_lefts) -> dict:
        batch = {
            "pixel_values": pixel_values.to(self.device, memory_format=torch.contiguous_format).float(),
            "input_ids": _tokenize(self.tokenizers[0], captions).to(self.device),
        }
        if self.kind == "sdxl":
            batch["input_ids_two"] = _tokenize(self.tokenizers[1], captions).to(self.device)
            batch["original_sizes"] = [tuple(s) for s in original_sizes]
            batch["crop_top_lefts"] = [tuple(c) for c in crop_top_lefts]
        return batch

    # -- the step -------------------------------------------------------------------------------

    def _encode_prompt_sdxl(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        # train_text_to_image_lora_sdxl.py `encode_prompt`: penultimate hidden states of both encoders,
        # concatenated; the pooled projection of the last one.
        embeds, pooled = [], None
        for te, ids in zip(self.text_encoders, (batch["input_ids"], batch["input_ids_two"])):
            out = te(ids, output_hidden_states=True, return_dict=True)
            pooled = out[0]
            h = out.hidden_states[-2]
            embeds.append(h.view(h.shape[0], h.shape[1], -1))
        return torch.cat(embeds, dim=-1), pooled.view(pooled.shape[0], -1)

    def _time_ids(self, batch: dict, target_size: tuple[int, int]) -> torch.Tensor:
        # train_text_to_image_lora_sdxl.py `compute_time_ids`.
        rows = [torch.tensor([list(o + c + target_size)], device=self.device, dtype=self.weight_dtype)
                for o, c in zip(batch["original_sizes"], batch["crop_top_lefts"])]
        return torch.cat(rows)

    def encode_latents(self, batch: dict) -> torch.Tensor:
        # The scripts' `vae.encode(pixel_values).latent_dist.sample() * scaling_factor`: a fresh sample of the
        # latent distribution every step, from torch's global generator.
        pixel_values = batch["pixel_values"]
        if self.kind != "sdxl":
            pixel_values = pixel_values.to(dtype=self.weight_dtype)
        latents = self.vae.encode(pixel_values).latent_dist.sample()
        return (latents * self.vae.config.scaling_factor).to(self.weight_dtype)

    def loss(self, batch: dict, noise: torch.Tensor | None = None, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """The loss the scripts backpropagate. Noise and timesteps are drawn as the scripts draw them unless
        given (tests give both sides the same ones to compare their losses and gradients)."""
        sched = self.noise_scheduler
        self.unet.train()
        latents = self.encode_latents(batch)
        bsz = latents.shape[0]
        if noise is None:
            noise = torch.randn_like(latents)
            if self.cfg.train.noise_offset:
                noise += self.cfg.train.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), device=latents.device)
        if timesteps is None:
            timesteps = torch.randint(0, sched.config.num_train_timesteps, (bsz,), device=latents.device).long()
        noisy_latents = sched.add_noise(latents, noise, timesteps)

        extra = {}
        if self.kind == "sdxl":
            encoder_hidden_states, pooled = self._encode_prompt_sdxl(batch)
            target_size = tuple(int(s) for s in batch["pixel_values"].shape[-2:])
            extra["added_cond_kwargs"] = {"time_ids": self._time_ids(batch, target_size), "text_embeds": pooled}
        else:
            encoder_hidden_states = self.text_encoders[0](batch["input_ids"], return_dict=False)[0]

        if sched.config.prediction_type == "epsilon":
            target = noise
        elif sched.config.prediction_type == "v_prediction":
            target = sched.get_velocity(latents, noise, timesteps)
        else:
            raise ValueError(f"Unknown prediction type {sched.config.prediction_type}")

        model_pred = self.unet(noisy_latents, timesteps, encoder_hidden_states, **extra, return_dict=False)[0]
        return self._mse(model_pred, target, timesteps)

    def _mse(self, model_pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        sched, gamma = self.noise_scheduler, self.cfg.train.min_snr_gamma
        if not gamma:  # the scripts' `--snr_gamma` unset
            return F.mse_loss(model_pred.float(), target.float(), reduction="mean")
        # `--snr_gamma`: Min-SNR weights per image, min(SNR, γ) / SNR (ε) or / (SNR + 1) (v).
        snr = compute_snr(sched, timesteps)
        mse_loss_weights = torch.stack([snr, gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
        if sched.config.prediction_type == "epsilon":
            mse_loss_weights = mse_loss_weights / snr
        elif sched.config.prediction_type == "v_prediction":
            mse_loss_weights = mse_loss_weights / (snr + 1)
        loss = F.mse_loss(model_pred.float(), target.float(), reduction="none")
        loss = loss.mean(dim=list(range(1, len(loss.shape)))) * mse_loss_weights
        return loss.mean()

    def train_step(self, batch: dict) -> float:
        acc, unet = self.accelerator, self.unet
        with acc.accumulate(unet):
            bsz = batch["pixel_values"].shape[0]
            loss = self.loss(batch)

            # "Gather the losses across all processes for logging": a host read-back every step.
            avg_loss = acc.gather(loss.repeat(bsz)).mean()
            self.train_loss += avg_loss.item() / acc.gradient_accumulation_steps

            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(self.params, self.cfg.train.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad()
        # The progress bar's `step_loss`: a second read-back.
        self.last_loss = loss.detach().item()
        return self.last_loss
