"""Choosing the result: the comparison dialog (`dialog`) with its controls strip (`controls`), the grid of
checkpoints x strengths x trigger on / off (`grid`, one prompt at a time in `grid_pane`), the picked image
large (`preview`) and what a comparison holds apart from any widget (`results`)."""
