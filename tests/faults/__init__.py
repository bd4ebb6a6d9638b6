"""Fault injection (issue 14): corrupt data, disk full, unusable outputs, signals, references.
Each fault of docs/reliability.md is reproduced here and must end in one line and its exit code."""
