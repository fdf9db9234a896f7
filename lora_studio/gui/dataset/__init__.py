"""The Dataset tab: the images as a Qt list model with lazy thumbnails (`model`), the grid and getting images
in (`view`, `widgets`), the caption editor and its undoable writes (`caption_editor`), edits over the whole
dataset (`bulk_actions`), the doctor's findings with their fixes (`health_panel`) and the regularisation
pictures (`regularization`, its folder's scan in `regularization_scan`)."""
