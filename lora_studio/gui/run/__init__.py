"""The Train tab: start / stop / resume a run and watch it (`panel`), the project's past runs (`history`),
samples by step (`sample_gallery`) and the loss over steps (`loss_chart`)."""
