"""Triggers of the Trading Grid integration."""
