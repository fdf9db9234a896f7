"""What the settings form is made of: an editor per setting, built from the schema's metadata (its
choices and range, its help as the tooltip), the problem line under a field, and the row builders.

The labels, help and ranges are core/config's; where a key is shown is places.py's. What is left here
is presentation only: how many decimals a number shows.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics, QValidator
from PySide6.QtWidgets import (
    QAbstractSpinBox, QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QSpinBox,
    QVBoxLayout, QWidget,
)

from lora_studio.core.config import key_info
from lora_studio.gui.settings.places import say_beside
from lora_studio.gui.store import ConfigStore

# Decimals a number's editor shows (3 when not listed). The range is the schema's; Qt rounds it to these.
DECIMALS = {"network.alpha": 1, "network.dropout": 2, "sample.guidance_scale": 1, "train.max_grad_norm": 2,
            "train.min_snr_gamma": 1, "dataset.caption_dropout": 2, "train.ema_decay": 5,
            "dataset.regularization.loss_weight": 2}
INT_LIMIT = 2**31 - 1  # a QSpinBox holds a C int


def widget_for(key: str, value: Any) -> QWidget:
    """The editor a setting gets: a combo for fixed choices, else by the value's type, within the schema's range."""
    info = key_info(key)
    if info.choices:
        combo = QComboBox()
        for choice in info.choices:
            combo.addItem(choice, choice)
            if choice in info.choice_help:
                combo.setItemData(combo.count() - 1, info.choice_help[choice], Qt.ItemDataRole.ToolTipRole)
        widget: QWidget = combo
    elif isinstance(value, bool):
        widget = QCheckBox()
    elif isinstance(value, int):
        widget = key_spin(key)
    elif isinstance(value, float) and key.endswith("_lr"):
        widget = SciSpinBox(key)
    elif isinstance(value, float):
        decimals = DECIMALS.get(key, 3)
        widget = QDoubleSpinBox(decimals=decimals)
        widget.setRange(info.min if info.min is not None else 0.0, info.max if info.max is not None else 1e6)
        widget.setSingleStep(10 ** -decimals if decimals else 1)
    else:
        widget = QLineEdit()
    widget.setToolTip(info.help)
    return widget


def spin(low: int, high: int, *, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setGroupSeparatorShown(True)
    box.setMinimumWidth(90)
    return box


def key_spin(key: str, *, step: int = 1) -> QSpinBox:
    """A whole-number editor for a key, within the schema's range."""
    info = key_info(key)
    box = spin(int(info.min or 0), int(min(info.max if info.max is not None else INT_LIMIT, INT_LIMIT)), step=step)
    box.setToolTip(info.help)
    return box


class ChoiceHelp(QLabel):
    """The help line of the chosen value, under a combo whose choices each have one (the optimizers)."""

    def __init__(self, store: ConfigStore, key: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("muted")
        self.setWordWrap(True)
        self._store, self._key, self._help = store, key, key_info(key).choice_help
        store.changed.connect(lambda changed: self._refresh() if changed in ("", key) else None)
        self._refresh()

    def _refresh(self) -> None:
        self.setText(self._help.get(self._store.get(self._key), ""))


def field_row(widget: QWidget, problem: QLabel, *below: QWidget) -> QWidget:
    holder = QWidget()
    layout = QVBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(2)
    row = QHBoxLayout()
    row.addWidget(widget)
    if not isinstance(widget, (QLineEdit, QPlainTextEdit)):
        row.addStretch(1)
    layout.addLayout(row)
    for w in below:
        layout.addWidget(w)
    layout.addWidget(problem)
    return holder


def stacked(row: QHBoxLayout, *below: QWidget) -> QWidget:
    holder = QWidget()
    layout = QVBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(4)
    layout.addLayout(row)
    for w in below:
        layout.addWidget(w)
    return holder


def reserve_lines(label: QLabel, lines: int = 2) -> QLabel:
    """A wrapped label that changes as the artist edits keeps the height of `lines` lines, so the fields below
    it stay where they are when its text grows from one line to two."""
    label.setMinimumHeight(QFontMetrics(label.font()).lineSpacing() * lines)
    label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    return label


class ProblemLabel(QLabel):
    """The validation problems of some keys, shown under their field; hidden when there is none."""

    def __init__(self, store: ConfigStore, *keys: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("problem")
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._store, self._keys = store, keys
        store.problems_changed.connect(self._refresh)
        store.changed.connect(self._refresh)
        self._refresh()

    def _refresh(self, *_: object) -> None:
        messages = [say_beside(p) for k in self._keys for p in self._store.problems_for(k)]
        self.setText("\n".join(messages))
        self.setVisible(bool(messages))


class SciSpinBox(QDoubleSpinBox):
    """A spin box for learning rates: shows 1e-4 rather than 0.000100; arrows step ×2 / ÷2."""

    def __init__(self, key: str = "train.learning_rate", parent: QWidget | None = None):
        super().__init__(parent)
        info = key_info(key)
        self.setDecimals(12)
        self.setRange(info.min if info.min is not None else 0.0, info.max if info.max is not None else 1.0)
        self.setKeyboardTracking(False)
        self.setMinimumWidth(90)  # "5e-05" must not be cut to "5e"
        self.setToolTip(info.help)

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt's name
        if value == 0 or 1e-3 <= abs(value) < 1e4:
            return f"{value:.4g}"
        mantissa, exponent = f"{value:.3e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"

    def valueFromText(self, text: str) -> float:  # noqa: N802 - Qt's name
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> object:
        try:
            v = float(text)
            state = QValidator.State.Acceptable if self.minimum() <= v <= self.maximum() else QValidator.State.Intermediate
        except ValueError:
            state = QValidator.State.Intermediate if text.strip() in ("", "-", ".") or text[-1:] in "eE-+" else QValidator.State.Invalid
        return state, text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt's name
        v = self.value() * (2.0 ** steps)
        self.setValue(float(f"{v:.3g}"))

    def stepEnabled(self) -> QAbstractSpinBox.StepEnabledFlag:  # noqa: N802 - Qt's name
        return QAbstractSpinBox.StepEnabledFlag.StepUpEnabled | QAbstractSpinBox.StepEnabledFlag.StepDownEnabled
