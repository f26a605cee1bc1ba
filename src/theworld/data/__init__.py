"""Training and evaluation data: the field's formats, read into one `Sample` type."""
