"""Hooks of the Trading Grid integration."""
