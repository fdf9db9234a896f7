"""Training settings: the few that matter up front, the rest under Advanced, all saved as they change.

The base model picker offers the checkpoints already on this computer (core/model_finder, searched on a
pool thread). Training length is set in steps (train.max_steps) or in whole epochs (train.epochs > 0, the
engine works out the steps when it starts), and the plain-words budget line under it says what either
means for this dataset, counted as the engine cuts its batches (core/budget), regularisation pictures
included: their folder is read once per change of its settings (gui/dataset/regularization_scan), not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractSpinBox, QButtonGroup, QComboBox, QFileDialog, QFormLayout, QFrame, QGroupBox, QHBoxLayout, QLabel,
    QLineEdit, QPlainTextEdit, QPushButton, QRadioButton, QScrollArea, QToolButton, QVBoxLayout, QWidget,
)

from lora_studio.core.budget import StepBudget, budget_for, describe
from lora_studio.core.config import key_info
from lora_studio.core.errors import UserError
from lora_studio.core.model_finder import describe_model, find_base_models
from lora_studio.core.presets import apply_preset, get_preset, list_presets, matching_preset, preset_keys
from lora_studio.gui import dialog_dirs
from lora_studio.gui.dataset.regularization_scan import RegularizationScan
from lora_studio.gui.device_probe import DeviceProbe
from lora_studio.gui.settings.fields import ChoiceHelp, ProblemLabel, SciSpinBox, field_row, key_spin, reserve_lines, spin, stacked, widget_for
from lora_studio.gui.settings.memory_line import MemoryLine
from lora_studio.gui.settings.model_note import ModelNote
from lora_studio.gui.settings.places import ADVANCED, APPLIES, APPLIES_ON, say
from lora_studio.gui.store import ConfigStore, bind
from lora_studio.gui.tasks import run_in_background

class _NoWheel(QObject):
    """Scrolling the page must not change a spin box or a combo the pointer happens to pass over."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Wheel and isinstance(obj, (QAbstractSpinBox, QComboBox)) and not obj.hasFocus():
            event.ignore()
            return True
        return False


class SettingsPanel(QWidget):
    budget_changed = Signal(str)

    def __init__(self, store: ConfigStore, parent: QWidget | None = None, *, find_models: bool = True,
                 device_probe: DeviceProbe | None = None, regularization: RegularizationScan | None = None):
        super().__init__(parent)
        self.store = store
        # The window's scan of the regularisation folder (shared with the Dataset tab), else one of its own.
        self.regularization = regularization or RegularizationScan(store, self)
        self.regularization.changed.connect(self._update_budget)
        self._probe = device_probe  # None: the app-wide probe, asked when the memory line is first shown
        self._items: list[Any] = []
        self._no_wheel = _NoWheel(self)
        self.budget_text = ""

        content = QWidget()
        content.setObjectName("settingsContent")
        content.setMaximumWidth(820)
        column = QVBoxLayout(content)
        column.setSpacing(14)
        column.addWidget(self._model_box())
        column.addWidget(self._essentials_box())
        self.advanced_toggle = QToolButton(text="Advanced settings", checkable=True)
        self.advanced_toggle.setObjectName("disclosure")
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        # Built on first open: some 50 rarely touched fields need not slow the window's start.
        self.advanced = QWidget()
        self.advanced.setLayout(QVBoxLayout())
        self.advanced.layout().setContentsMargins(0, 0, 0, 0)
        self.advanced.hide()
        self.advanced_widgets: dict[str, QWidget] = {}
        self._conditional_rows: dict[str, tuple[QFormLayout, QWidget]] = {}
        self.advanced_toggle.toggled.connect(self._toggle_advanced)
        column.addWidget(self.advanced_toggle)
        column.addWidget(self.advanced)
        column.addStretch(1)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        holder = QWidget()
        centre = QHBoxLayout(holder)
        centre.addStretch(1)
        centre.addWidget(content, 100)
        centre.addStretch(1)
        scroll.setWidget(holder)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self._guard_wheel(content)

        store.changed.connect(self._changed)
        self._changed("")
        if find_models:
            run_in_background(find_base_models, self._models_found, lambda _e: None, owner=self)

    # --- sections --------------------------------------------------------------------------------

    def _model_box(self) -> QGroupBox:
        box = QGroupBox(key_info("model.base").label)
        self.model_combo = QComboBox()
        self.model_combo.setMinimumWidth(320)
        self.model_combo.setPlaceholderText("Choose the model your LoRA is for…")
        self.model_combo.currentIndexChanged.connect(self._model_picked)
        file_button = QPushButton("File…")
        file_button.setToolTip("A single .safetensors checkpoint")
        file_button.clicked.connect(self._browse_file)
        folder_button = QPushButton("Folder…")
        folder_button.setToolTip("A diffusers model folder (with model_index.json)")
        folder_button.clicked.connect(self._browse_folder)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(file_button)
        row.addWidget(folder_button)
        self.models_note = ModelNote(self.store)

        self.preset_combo = QComboBox()
        # Shown when the settings match no preset: the box never names a preset that is not applied.
        self.preset_combo.setPlaceholderText("Custom settings (no preset matches)")
        for name in list_presets():
            self.preset_combo.addItem(get_preset(name).label, name)
        self.preset_apply = QPushButton("Apply preset")
        self.preset_apply.clicked.connect(self._apply_preset)
        self.preset_note = QLabel()
        self.preset_note.setObjectName("muted")
        self.preset_note.setWordWrap(True)
        reserve_lines(self.preset_note)
        self.preset_combo.currentIndexChanged.connect(self._preset_note)
        prow = QHBoxLayout()
        prow.addWidget(self.preset_combo, 1)
        prow.addWidget(self.preset_apply)

        form = QFormLayout(box)
        self.model_combo.setToolTip(key_info("model.base").help)
        form.addRow("Model", stacked(row, self.models_note, ProblemLabel(self.store, "model.base")))
        form.addRow("Preset", stacked(prow, self.preset_note))
        return box

    def _essentials_box(self) -> QGroupBox:
        box = QGroupBox("Training")
        form = QFormLayout(box)
        s = self.store

        self.steps_radio = QRadioButton(key_info("train.max_steps").label)
        self.epochs_radio = QRadioButton(key_info("train.epochs").label)
        self._length_group = QButtonGroup(self)
        self._length_group.addButton(self.steps_radio)
        self._length_group.addButton(self.epochs_radio)
        self.steps = bind(s, "train.max_steps", key_spin("train.max_steps", step=100))
        self.epochs = spin(1, int(key_info("train.epochs").max))
        self.epochs.setToolTip(key_info("train.epochs").help)
        self.epochs.setValue(10)  # what epochs mode starts from before a dataset says what the steps mean
        self.epochs.valueChanged.connect(self._epochs_edited)
        self.epochs_radio.toggled.connect(self._length_mode)
        length = QHBoxLayout()
        length.addWidget(self.steps_radio)
        length.addWidget(self.steps)
        length.addSpacing(12)
        length.addWidget(self.epochs_radio)
        length.addWidget(self.epochs)
        length.addStretch(1)
        self.budget = QLabel()
        self.budget.setObjectName("budget")
        self.budget.setWordWrap(True)
        reserve_lines(self.budget)  # it changes with every edit; the fields below must not jump
        form.addRow("Train for", stacked(length, self.budget, ProblemLabel(s, "train.max_steps", "train.epochs")))

        self.rank = bind(s, "network.rank", key_spin("network.rank"))
        self._add(form, "network.rank", self.rank)
        self.learning_rate = bind(s, "train.learning_rate", SciSpinBox("train.learning_rate"))
        self._add(form, "train.learning_rate", self.learning_rate)
        self.resolution = QComboBox(editable=True)
        self.resolution.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        for r in (512, 768, 1024):
            self.resolution.addItem(str(r), r)
        self.resolution.lineEdit().editingFinished.connect(self._resolution_typed)
        self.resolution.activated.connect(lambda i: s.set("train.resolution", self.resolution.itemData(i)))
        self._add(form, "train.resolution", self.resolution)
        self.batch_size = bind(s, "train.batch_size", key_spin("train.batch_size"))
        self._add(form, "train.batch_size", self.batch_size)
        self.memory = MemoryLine(s, probe=self._probe)
        form.addRow("GPU memory", self.memory)
        self.trigger = bind(s, "output.trigger", QLineEdit(placeholderText="e.g. zzmystyle"))
        self._add(form, "output.trigger", self.trigger)
        self.prompts = bind(s, "sample.prompts", QPlainTextEdit())
        self.prompts.setPlaceholderText("One prompt per line, e.g.\nzzmystyle, a lighthouse on a cliff at dusk\nzzmystyle, portrait of an old fisherman")
        self.prompts.setFixedHeight(84)
        self._add(form, "sample.prompts", self.prompts)
        return box

    def _add(self, form: QFormLayout, key: str, widget: QWidget) -> QWidget:
        """A row for one key: the schema's label and help, the editor, the chosen value's help line where its
        choices have one, and its problems under it."""
        info = key_info(key)
        widget.setToolTip(info.help)
        below = [ChoiceHelp(self.store, key)] if info.choice_help else []
        row = field_row(widget, ProblemLabel(self.store, key), *below)
        form.addRow(info.label, row)
        return row

    def _guard_wheel(self, root: QWidget) -> None:
        for w in root.findChildren(QWidget):
            if isinstance(w, (QAbstractSpinBox, QComboBox)):
                w.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
                w.installEventFilter(self._no_wheel)

    def _build_advanced(self) -> None:
        if self.advanced_widgets:
            return
        column = self.advanced.layout()
        for title, keys in ADVANCED:
            box = QGroupBox(title)
            form = QFormLayout(box)
            for key in keys:
                w = widget_for(key, self.store.get(key))
                bind(self.store, key, w)
                self.advanced_widgets[key] = w
                row = self._add(form, key, w)
                if key in APPLIES:
                    self._conditional_rows[key] = (form, row)
            column.addWidget(box)
        self._guard_wheel(self.advanced)
        self._show_applicable()

    def _show_applicable(self) -> None:
        """Rows of settings the current choices do not use are hidden (places.APPLIES)."""
        for key, (form, row) in self._conditional_rows.items():
            form.setRowVisible(row, APPLIES[key](self.store.config))

    # --- behaviour -------------------------------------------------------------------------------

    def set_dataset(self, items: list[Any]) -> None:
        """The images that train (excluded ones left out): the budget line counts them."""
        self._items = list(items)
        self._update_budget()

    def _changed(self, key: str) -> None:
        if key in ("", "model.base"):
            self._show_model(self.store.get("model.base"))
        if key in ("", "train.resolution"):
            r = self.store.get("train.resolution")
            i = self.resolution.findData(r)
            self.resolution.blockSignals(True)
            if i >= 0:
                self.resolution.setCurrentIndex(i)
            else:
                self.resolution.setEditText(str(r))
            self.resolution.blockSignals(False)
        if key == "" or key in preset_keys():  # the presets say which keys they set
            self._show_preset()
        if key in ("", "train.epochs"):
            self._show_length_mode()
        if key == "" or key in APPLIES_ON:
            self._show_applicable()
        self._update_budget()

    def _show_length_mode(self) -> None:
        epochs = self.store.get("train.epochs")
        for w in (self.epochs_radio, self.steps_radio, self.epochs):
            w.blockSignals(True)
        (self.epochs_radio if epochs > 0 else self.steps_radio).setChecked(True)
        if epochs > 0:
            self.epochs.setValue(epochs)
        for w in (self.epochs_radio, self.steps_radio, self.epochs):
            w.blockSignals(False)
        self.steps.setEnabled(epochs <= 0)
        self.epochs.setEnabled(epochs > 0)

    def _budget(self) -> StepBudget:
        """The step budget the engine will train for these images (UserError when it cannot be worked out)."""
        return budget_for(self.store.config, self._items, regularization=self.regularization.budget_items())

    def _update_budget(self) -> None:
        if not self._items:
            text = "Add images in the Dataset tab to see what this means in epochs."
        else:
            try:
                budget = self._budget()
                text = describe(budget) + "."
                if self.store.get("train.epochs") <= 0:  # steps mode: the epochs box shows what they come to
                    self.epochs.blockSignals(True)
                    self.epochs.setValue(max(1, round(budget.exact_epochs)))
                    self.epochs.blockSignals(False)
            except UserError as e:
                text = say(e.template)
        if text != self.budget_text:
            self.budget_text = text
            self.budget.setText(text)
            self.budget_changed.emit(text)

    def _epochs_edited(self, epochs: int) -> None:
        if self.epochs_radio.isChecked():
            self.store.set("train.epochs", epochs)

    def _length_mode(self, by_epochs: bool) -> None:
        if by_epochs:
            self.store.set("train.epochs", self.epochs.value())
            return
        # Back to steps: keep the length the epochs meant for this dataset, as a fixed number of steps.
        train = {"epochs": 0}
        if self._items:
            try:
                train["max_steps"] = self._budget().steps
            except UserError:
                pass
        self.store.replace(self.store.config.replace(train=train))

    def _resolution_typed(self) -> None:
        try:
            self.store.set("train.resolution", int(self.resolution.currentText().strip()))
        except ValueError:
            self._changed("train.resolution")  # not a number: show the stored value again

    def _toggle_advanced(self, shown: bool) -> None:
        if shown:
            self._build_advanced()
        self.advanced.setVisible(shown)
        self.advanced_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def _show_preset(self) -> None:
        """The box shows the preset the settings match, or none (“Custom settings”) when they match none."""
        current = matching_preset(self.store.config)
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentIndex(self.preset_combo.findData(current) if current else -1)
        self.preset_combo.blockSignals(False)
        self._preset_note()

    def _preset_note(self, *_: Any) -> None:
        name = self.preset_combo.currentData()
        self.preset_apply.setEnabled(bool(name))
        if not name:
            self.preset_note.setText("Your settings match no preset. Choose one to see what it sets.")
            return
        current = matching_preset(self.store.config) == name
        note = get_preset(name).description
        self.preset_note.setText(note + (" In use." if current else " Not applied: Apply preset sets it and keeps your model, images and trigger word."))

    def _apply_preset(self) -> None:
        name = self.preset_combo.currentData()
        if name:
            self.store.replace(apply_preset(self.store.config, name))

    # --- the base model --------------------------------------------------------------------------

    def _models_found(self, models: list[Path]) -> None:
        current = self.store.get("model.base")
        self.model_combo.blockSignals(True)
        for path in models:
            if self.model_combo.findData(str(path)) < 0:
                self.model_combo.addItem(describe_model(path), str(path))
                self.model_combo.setItemData(self.model_combo.count() - 1, str(path), Qt.ItemDataRole.ToolTipRole)
        self.model_combo.blockSignals(False)
        self._show_model(current)
        self.models_note.found(len(models))

    def _show_model(self, base: str) -> None:
        self.model_combo.blockSignals(True)
        if base:
            i = self.model_combo.findData(base)
            if i < 0:
                self.model_combo.addItem(describe_model(Path(base)), base)
                self.model_combo.setItemData(self.model_combo.count() - 1, base, Qt.ItemDataRole.ToolTipRole)
                i = self.model_combo.count() - 1
            self.model_combo.setCurrentIndex(i)
        else:
            self.model_combo.setCurrentIndex(-1)
        self.model_combo.blockSignals(False)

    def _model_picked(self, index: int) -> None:
        if index >= 0:
            self.store.set("model.base", self.model_combo.itemData(index))

    def _browse_file(self) -> None:
        start = dialog_dirs.start_dir("models", self.store.get("model.base"))
        path, _ = QFileDialog.getOpenFileName(self, "Choose a base model", start, "Model checkpoints (*.safetensors)")
        self._model_chosen(path)

    def _browse_folder(self) -> None:
        # A diffusers folder is itself the choice: start beside the current one, in its parent.
        current = self.store.get("model.base")
        start = dialog_dirs.start_dir("models", Path(current).parent if current else None)
        self._model_chosen(QFileDialog.getExistingDirectory(self, "Choose a diffusers model folder", start))

    def _model_chosen(self, path: str) -> None:
        if path:
            dialog_dirs.remember("models", Path(path).parent)
            self.store.set("model.base", str(Path(path)))
