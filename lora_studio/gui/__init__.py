"""PySide6 window. Imports core, never engine (and so never torch)."""
