"""Sensors of the Trading Grid integration."""
