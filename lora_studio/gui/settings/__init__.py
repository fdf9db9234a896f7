"""The Settings tab: the panel with the few settings that matter up front and the rest under Advanced
(`panel`), the Advanced table and its row builders (`fields`), and the line that says whether these settings
fit on this GPU (`memory_line`)."""
