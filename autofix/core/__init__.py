"""The leaves: where autofix's data folders are, user-facing errors, YAML reading and terminal output.
Nothing here imports another part of autofix."""
