"""The optimizers a run can use, in pure Python: what each is, the extra arguments it takes
(`[train.optimizer_args]`), and how much state it keeps per trainable parameter (core/fit's estimate).

The engine builds them (engine/training/optimizers.py); config validation, the memory estimate and the
Settings tab read this table, so an optimizer's name, its arguments and its memory are said in one place.

Why `lion8bit` is a choice of its own rather than `lion` with an `eight_bit = true` argument: it is
another class from another package (bitsandbytes' Lion8bit) with other arguments and a
quarter of the state, exactly as `adamw8bit` is beside `adamw`. One combo entry per memory footprint
keeps the memory estimate a function of the choice, and optimizer_args only ever tune the chosen class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lora_studio.core.errors import Problem

# An argument's type: what TOML value it takes, and how the message says so.
FLOAT, INT, BOOL, FLOATS2, FLOATS3, FLOATS2_OR_3 = "float", "int", "bool", "floats2", "floats3", "floats2or3"
TYPE_WORDS = {
    FLOAT: "a number (for example 0.8)",
    INT: "a whole number (for example 4096)",
    BOOL: "true or false",
    FLOATS2: "a list of 2 numbers (for example [0.9, 0.999])",
    FLOATS3: "a list of 3 numbers (for example [0.9, 0.999, 0.9999])",
    FLOATS2_OR_3: "a list of 2 or 3 numbers (for example [0.9, 0.99])",
}
# Keyword arguments that have a setting of their own: optimizer_args never sets them twice.
OWN_SETTINGS = {"lr": "train.learning_rate", "weight_decay": "train.weight_decay", "warmup_steps": "train.warmup_steps",
                "params": "", "fused": "", "foreach": ""}


@dataclass(frozen=True)
class Optimizer:
    name: str
    help: str  # one line for the Settings tab (the choice's help)
    args: dict[str, str]  # optimizer_args it accepts: name -> type
    # Bytes of optimizer state per trainable (fp32) parameter, as a function of the LoRA rank (factored second
    # moments scale with 1/rank). core/fit adds the fp32 weight and its gradient (8 bytes) to it.
    state_bytes: Any
    defaults: dict[str, Any] = field(default_factory=dict)  # ours, where they differ from the library's
    package: str = ""  # pip name, for the missing-package message
    schedule_free: bool = False  # needs optimizer.train() / .eval() and a constant schedule
    lr_is_a_multiplier: bool = False  # Prodigy: train.learning_rate scales the step size it finds (1 is normal)


# State per parameter, with where it comes from (each a fp32 tensor of the parameter's size unless said):
OPTIMIZERS: dict[str, Optimizer] = {o.name: o for o in (
    # torch.optim.AdamW: exp_avg + exp_avg_sq.
    Optimizer("adamw", "AdamW: the usual choice; 1e-4 is a good learning rate.",
              {"betas": FLOATS2, "eps": FLOAT, "amsgrad": BOOL}, lambda rank: 8.0),
    # bitsandbytes AdamW8bit: both moments in one byte each (plus a float absmax per 2048-value block).
    Optimizer("adamw8bit", "AdamW with 8-bit state: less memory, the same results (install lora-studio[bnb]).",
              {"betas": FLOATS2, "eps": FLOAT, "min_8bit_size": INT, "percentile_clipping": INT, "block_wise": BOOL},
              lambda rank: 2.0, package="bitsandbytes"),
    # prodigyopt.Prodigy: exp_avg, exp_avg_sq, s, and p0 (a copy of the initial weights; a scalar for weights
    # that start at zero, as lora_B does, so 12-16 bytes; 16 is the bound).
    Optimizer("prodigy", "Prodigy finds the learning rate itself — leave the learning rate at 1.",
              {"betas": FLOATS2, "beta3": FLOAT, "eps": FLOAT, "decouple": BOOL, "use_bias_correction": BOOL,
               "safeguard_warmup": BOOL, "d0": FLOAT, "d_coef": FLOAT, "growth_rate": FLOAT, "slice_p": INT},
              lambda rank: 16.0,
              # The Prodigy README's advice for diffusion models: bias correction on, and the warm-up safeguard.
              defaults={"use_bias_correction": True, "safeguard_warmup": True},
              package="prodigyopt", lr_is_a_multiplier=True),
    # transformers' Adafactor: factored second moments (a row and a column vector per matrix: (r + n) values
    # for r·n parameters, ≈ 1/rank floats each) and no first moment unless beta1 is set.
    Optimizer("adafactor", "Adafactor: very little optimizer memory. With relative_step = true in the optimizer "
              "arguments it sets its own learning rate (then the schedule must be constant).",
              {"eps": FLOATS2, "clip_threshold": FLOAT, "decay_rate": FLOAT, "beta1": FLOAT, "scale_parameter": BOOL,
               "relative_step": BOOL, "warmup_init": BOOL},
              lambda rank: 4.0 / max(rank, 1),
              # The library's defaults (relative_step, scale_parameter) ignore train.learning_rate; ours use it,
              # as LoRA trainers do.
              defaults={"relative_step": False, "scale_parameter": False, "warmup_init": False}),
    # pytorch_optimizer.Lion: one momentum (exp_avg).
    Optimizer("lion", "Lion: half AdamW's optimizer memory; use a learning rate 3-10× smaller than AdamW's (e.g. 3e-5).",
              {"betas": FLOATS2, "weight_decouple": BOOL, "fixed_decay": BOOL}, lambda rank: 4.0,
              package="pytorch-optimizer"),
    # bitsandbytes Lion8bit: the momentum in one byte.
    Optimizer("lion8bit", "Lion with 8-bit state (install lora-studio[bnb]); a learning rate 3-10× smaller than AdamW's.",
              {"betas": FLOATS2, "min_8bit_size": INT, "percentile_clipping": INT, "block_wise": BOOL},
              lambda rank: 1.0, package="bitsandbytes"),
    # schedulefree.AdamWScheduleFree: z (the base sequence) + exp_avg_sq; the weights hold y (x when evaluating).
    Optimizer("adamw_schedulefree", "Schedule-free AdamW: no schedule to choose (keep it constant; warm-up steps still "
              "apply). Samples and exports use its averaged weights.",
              {"betas": FLOATS2, "eps": FLOAT, "r": FLOAT, "weight_lr_power": FLOAT}, lambda rank: 8.0,
              package="schedulefree", schedule_free=True),
    # pytorch_optimizer.CAME: exp_avg, and factored exp_avg_sq and exp_avg_res (Adafactor's rows and columns, twice).
    Optimizer("came", "CAME: Adafactor's small memory with AdamW-like results; 1e-4 to 2e-4 is a good learning rate.",
              {"betas": FLOATS3, "clip_threshold": FLOAT, "eps1": FLOAT, "eps2": FLOAT, "ams_bound": BOOL,
               "weight_decouple": BOOL, "fixed_decay": BOOL},
              lambda rank: 4.0 + 8.0 / max(rank, 1), package="pytorch-optimizer"),
)}
NAMES = tuple(OPTIMIZERS)
CHOICE_HELP = {name: o.help for name, o in OPTIMIZERS.items()}
# The schedules a schedule-free optimizer accepts: it has no schedule, only its own warm-up.
CONSTANT_SCHEDULES = ("constant", "constant_with_warmup")


def state_bytes(optimizer: str, rank: int) -> float:
    """Optimizer state per trainable parameter (bytes); AdamW's for a name this table lacks."""
    return float(OPTIMIZERS.get(optimizer, OPTIMIZERS["adamw"]).state_bytes(rank))


def _type_ok(value: Any, kind: str) -> bool:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if kind == FLOAT:
        return number(value)
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == BOOL:
        return isinstance(value, bool)
    sizes = {FLOATS2: (2,), FLOATS3: (3,), FLOATS2_OR_3: (2, 3)}[kind]
    return isinstance(value, (list, tuple)) and len(value) in sizes and all(number(v) for v in value)


def arg_problems(optimizer: str, args: dict[str, Any]) -> list[Problem]:
    """Every problem with `[train.optimizer_args]` for this optimizer, each naming the argument."""
    spec = OPTIMIZERS.get(optimizer)
    if spec is None:
        return []  # train.optimizer itself is reported (it is not one of the choices)
    problems = []
    for name, value in args.items():
        if name in OWN_SETTINGS:
            own = OWN_SETTINGS[name]
            problems.append(Problem("train.optimizer_args", f"sets {name!r}, which "
                                    + (f"is {{{own}}}'s; set that instead." if own else "the app sets itself; remove it.")))
        elif name not in spec.args:
            accepted = ", ".join(spec.args) or "none"
            problems.append(Problem("train.optimizer_args", f"has {name!r}, which {optimizer} does not take; "
                                    f"{optimizer} takes {accepted}."))
        elif not _type_ok(value, spec.args[name]):
            problems.append(Problem("train.optimizer_args", f"has {name} = {value!r}; {name} must be "
                                    f"{TYPE_WORDS[spec.args[name]]}."))
        elif name in ("betas", "beta1", "beta3") and not all(0 <= b < 1 for b in (value if isinstance(value, list) else [value])):
            problems.append(Problem("train.optimizer_args", f"has {name} = {value!r}; each beta must be at least 0 and below 1."))
    if optimizer == "adafactor" and args.get("warmup_init") is True and not relative_step(optimizer, args):
        problems.append(Problem("train.optimizer_args", "has warmup_init = true, which works only with relative_step = true; "
                                "add relative_step = true or remove warmup_init."))
    return problems


def arguments(optimizer: str, args: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments the optimizer is built with beyond lr and weight decay: ours, then the artist's."""
    spec = OPTIMIZERS[optimizer]
    out = {**spec.defaults, **args}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}


def relative_step(optimizer: str, args: dict[str, Any]) -> bool:
    """Adafactor setting its own learning rate (relative_step = true): train.learning_rate is not used."""
    return optimizer == "adafactor" and bool(arguments(optimizer, args).get("relative_step"))


def schedule_problems(optimizer: str, args: dict[str, Any], scheduler: str) -> list[Problem]:
    """A schedule the optimizer cannot follow: schedule-free AdamW has none, and Adafactor's relative step is
    its own (a schedule would scale a learning rate it does not use)."""
    spec = OPTIMIZERS.get(optimizer)
    if spec is None or scheduler in CONSTANT_SCHEDULES:
        return []
    if spec.schedule_free:
        return [Problem("train.lr_scheduler", f"is {scheduler!r}, but {optimizer} makes its own schedule; set it to "
                        "'constant' ({train.warmup_steps} still warm it up).")]
    if relative_step(optimizer, args):
        return [Problem("train.lr_scheduler", f"is {scheduler!r}, but adafactor with relative_step = true sets its own "
                        "learning rate; set it to 'constant', or relative_step = false in {train.optimizer_args}.")]
    return []


def warnings(cfg: Any) -> list[str]:
    """What a run says before it starts about its optimizer settings (warning events, not problems)."""
    t, out = cfg.train, []
    spec = OPTIMIZERS.get(t.optimizer)
    if spec is None:
        return out
    if spec.lr_is_a_multiplier:
        rates = [("{train.learning_rate}", t.learning_rate)]
        if cfg.network.train_text_encoder:
            rates.append(("{network.text_encoder_lr}", cfg.network.text_encoder_lr))
        for key, lr in rates:
            if lr < 0.1:
                out.append(f"{key} is {lr:g}, but {t.optimizer} finds the learning rate itself and multiplies it by this: "
                           f"at {lr:g} it barely trains. Set it to 1 (or 0.5 to be gentler).")
    if relative_step(t.optimizer, t.optimizer_args):
        out.append("adafactor with relative_step = true sets its own learning rate: {train.learning_rate} is not used.")
    return out
