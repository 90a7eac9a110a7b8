"""Modules, cells and losses (see the RNN issue)."""
