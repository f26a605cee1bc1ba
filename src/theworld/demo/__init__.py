"""The end-to-end demo (`theworld demo`, `make demo`)."""
