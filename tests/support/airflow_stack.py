"""Fixture plugin (being written)."""
