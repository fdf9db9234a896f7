"""The strip above the comparison grid: which checkpoints, strengths, prompts and denoising steps to compare,
checked as they are typed, and the Generate (Stop while running) button.

It turns the choices into a Plan and into the engine's `compare` arguments; running the engine is the
dialog's business, which tells the strip when it runs so the choices lock.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListWidget,
    QListWidgetItem, QPlainTextEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from lora_studio.gui.compare.grid import (
    DEFAULT_STRENGTHS, Plan, RunSettings, format_strength, has_trigger_variant, parse_strengths,
)
from lora_studio.gui.compare.results import images_text


class CompareControls(QWidget):
    changed = Signal()  # a choice changed (and was checked): the dialog updates what depends on it

    def __init__(self, steps: list[int], settings: RunSettings, parent: QWidget | None = None):
        super().__init__(parent)
        self._steps = steps
        self._settings = settings

        self.checkpoint_list = QListWidget(self)
        self.checkpoint_list.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        for step in steps:
            item = QListWidgetItem(f"Step {step:,}" + ("  (newest)" if step == steps[-1] else ""))
            item.setData(Qt.ItemDataRole.UserRole, step)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            self.checkpoint_list.addItem(item)
        self.checkpoint_list.setFixedHeight(92)
        self.checkpoint_list.setFixedWidth(190)
        self.checkpoint_list.itemChanged.connect(self.validate)
        checkpoints_box = QGroupBox("Checkpoints", self)
        QVBoxLayout(checkpoints_box).addWidget(self.checkpoint_list)

        self.strengths_edit = QLineEdit(", ".join(format_strength(s) for s in DEFAULT_STRENGTHS), self)
        self.strengths_edit.setPlaceholderText("0.5, 1.0")
        self.strengths_edit.setToolTip("LoRA strengths to try, separated by commas. 1.0 is the LoRA as trained; "
                                       "lower values apply it more gently.")
        self.strengths_edit.textChanged.connect(self.validate)
        self.strengths_edit.setMinimumWidth(220)
        self.strengths_problem = QLabel(self)
        self.strengths_problem.setObjectName("problem")
        self.strengths_problem.hide()
        word = settings.trigger
        self.trigger_check = QCheckBox(f"Also without the trigger word “{word}”" if word
                                       else "Also without the trigger word", self)
        if word:
            self.trigger_check.setChecked(True)
            self.trigger_check.setToolTip("Make each image a second time with the trigger word taken out of the "
                                          "prompt, to see whether the style bleeds into every prompt.")
        else:
            self.trigger_check.setChecked(False)
            self.trigger_check.setEnabled(False)
            self.trigger_check.setToolTip("This run has no trigger word (Settings → Trigger word), so the prompts "
                                          "are used as written.")
        self.trigger_check.toggled.connect(self.validate)
        self.sampling_steps = QSpinBox(self)
        self.sampling_steps.setRange(1, 1000)
        self.sampling_steps.setValue(settings.sampling_steps)
        self.sampling_steps.setToolTip(f"Denoising steps per image. The run's samples used "
                                       f"{settings.sampling_steps}; fewer is faster, more is finer.")
        self.sampling_steps.valueChanged.connect(self.validate)
        self.sampling_steps.setMinimumWidth(90)
        self.prompts_edit = QPlainTextEdit("\n".join(settings.prompts), self)
        self.prompts_edit.setPlaceholderText(f"One prompt a line, e.g.\n{word or 'zzmystyle'}, a lighthouse on a cliff")
        self.prompts_edit.setToolTip("The prompts of the grid, one a line (the run's sample prompts to start with). "
                                     "Put the trigger word in as its own tag, e.g. “zzmystyle, a lighthouse”.")
        self.prompts_edit.setFixedHeight(92)
        self.prompts_edit.setMinimumWidth(260)
        self.prompts_edit.textChanged.connect(self.validate)
        prompts_box = QGroupBox("Prompts", self)
        QVBoxLayout(prompts_box).addWidget(self.prompts_edit)

        images_box = QGroupBox("Images", self)
        form = QFormLayout(images_box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        strengths_col = QVBoxLayout()
        strengths_col.setSpacing(2)
        strengths_col.addWidget(self.strengths_edit)
        strengths_col.addWidget(self.strengths_problem)
        form.addRow("LoRA strengths:", strengths_col)
        form.addRow("", self.trigger_check)
        form.addRow("Denoising steps:", self.sampling_steps)

        self.summary_label = QLabel(self)
        self.summary_label.setObjectName("muted")
        self.summary_label.setAlignment(Qt.AlignmentFlag.AlignRight)
        self.generate_button = QPushButton("Generate", self)
        self.generate_button.setObjectName("primary")
        self.generate_button.setDefault(True)
        self.generate_button.setMinimumWidth(130)
        go = QVBoxLayout()
        go.addStretch(1)
        go.addWidget(self.summary_label)
        go.addWidget(self.generate_button, 0, Qt.AlignmentFlag.AlignRight)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)  # it sits in the dialog's margins, as the row it replaced did
        layout.addWidget(checkpoints_box)
        layout.addWidget(images_box)
        layout.addWidget(prompts_box, 1)
        layout.addLayout(go)

    # --- what was chosen ----------------------------------------------------------------------------

    def plan(self) -> Plan | None:
        """The choices as a Plan, or None while they are not valid."""
        steps = tuple(self._checked_steps())
        try:
            strengths = tuple(parse_strengths(self.strengths_edit.text()))
        except ValueError:
            return None
        prompts = self.prompts()
        if not steps or not prompts:
            return None
        both, word = self.trigger_variants(), self._settings.trigger
        triggers = tuple((True, False) if both and has_trigger_variant(p, word) else (True,) for p in prompts)
        return Plan(steps, strengths, prompts, triggers)

    def compare_args(self, run_dir: Path) -> list[str] | None:
        """The engine's command line for the current choices, or None while they are not valid."""
        plan = self.plan()
        if plan is None:
            return None
        args = ["compare", str(run_dir), "--steps", ",".join(str(s) for s in plan.steps),
                "--strengths", ",".join(format_strength(s) for s in plan.strengths),
                "--sampling-steps", str(self.sampling_steps.value())]
        if plan.prompts != self._settings.prompts:  # otherwise the engine uses the run's own
            for prompt in plan.prompts:
                args += ["--prompt", prompt]
        if not self.trigger_variants():
            args.append("--no-trigger-variants")
        return args

    def prompts(self) -> tuple[str, ...]:
        return tuple(line.strip() for line in self.prompts_edit.toPlainText().splitlines() if line.strip())

    def trigger_variants(self) -> bool:
        return bool(self._settings.trigger) and self.trigger_check.isChecked()

    def _checked_steps(self) -> list[int]:
        return [self.checkpoint_list.item(i).data(Qt.ItemDataRole.UserRole)
                for i in range(self.checkpoint_list.count())
                if self.checkpoint_list.item(i).checkState() == Qt.CheckState.Checked]

    # --- shown state --------------------------------------------------------------------------------

    def show_strengths(self, strengths: list[float]) -> None:
        """A saved comparison's strengths, so Generate starts from what it showed."""
        self.strengths_edit.setText(", ".join(format_strength(s) for s in strengths))

    def validate(self, *_args) -> None:
        try:
            parse_strengths(self.strengths_edit.text())
            self.strengths_problem.hide()
        except ValueError as e:
            self.strengths_problem.setText(str(e))
            self.strengths_problem.show()
        plan = self.plan()
        if plan is not None:
            n = len(plan.prompts)
            self.summary_label.setText(f"{images_text(plan.total())} · {n} prompt{'s' if n != 1 else ''}")
        elif self._steps and not self._checked_steps():
            self.summary_label.setText("Pick at least one checkpoint.")
        elif not self.prompts():
            self.summary_label.setText("Write at least one prompt.")
        else:
            self.summary_label.setText("")
        self.changed.emit()

    def set_running(self, running: bool, stopping: bool) -> None:
        """Generate turns into Stop (then Force stop) and the choices lock while the engine runs."""
        self.generate_button.setText("Force stop" if stopping else "Stop" if running else "Generate")
        self.generate_button.setToolTip(
            "End the engine now" if stopping else "Stop after the image being made; the images made are kept"
            if running else "Make the images (the engine loads the base model and each checkpoint)")
        self.generate_button.setEnabled(running or self.plan() is not None)
        for w in (self.checkpoint_list, self.strengths_edit, self.sampling_steps, self.prompts_edit):
            w.setEnabled(not running)
        self.trigger_check.setEnabled(not running and bool(self._settings.trigger))
