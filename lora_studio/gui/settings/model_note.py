"""The line under the model picker: what the chosen model predicts, read from its files the moment it is
chosen (core/prediction, the decision the run's status line repeats), or, with no model chosen, what the
search of this computer found.

Why say the prediction here: a v-prediction model (NoobAI-XL v-pred and its finetunes) trained as an epsilon
model gives grey or burnt LoRAs, and an artist should see which one LoRA Studio will train before the run,
not in a status line a minute after Start.
"""

from __future__ import annotations

from PySide6.QtWidgets import QLabel

from lora_studio.core.budget import plural
from lora_studio.core.prediction import note_for
from lora_studio.gui.settings.places import say
from lora_studio.gui.store import ConfigStore

# The settings whose change changes the note (the model, and the two that override what it says).
KEYS = ("model.base", "model.prediction", "train.zero_terminal_snr")


class ModelNote(QLabel):
    def __init__(self, store: ConfigStore, parent=None):
        super().__init__(parent)
        self.setObjectName("muted")
        self.setWordWrap(True)
        self.store = store
        self._found: int | None = None  # None while the search runs
        store.changed.connect(lambda key: self.update_text() if key in ("", *KEYS) else None)
        self.update_text()

    def found(self, count: int) -> None:
        """The search for models on this computer ended with `count` models."""
        self._found = count
        self.update_text()

    def update_text(self) -> None:
        self._say()
        self.setHidden(not self.text())  # no blank line between the picker and the problem under it

    def _say(self) -> None:
        note = note_for(self.store.config)
        if note:
            self.setText(say(f"Trains with {note}."))
        elif self.store.get("model.base"):
            self.setText("")  # the problem line under it says what is wrong, or the run will say what it reads
        elif self._found is None:
            self.setText("Looking for models on this computer…")
        elif self._found:
            self.setText(f"Found {plural(self._found, 'model')} from your other Stable Diffusion apps.")
        else:
            self.setText("No models found in the usual places. Choose a .safetensors file or a diffusers folder.")
