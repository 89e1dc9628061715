"""Operators of the Trading Grid integration."""
