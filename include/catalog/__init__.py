"""Catalog sync: catalogs, price lists and promotions from partners, diffed, acknowledged on
Trading Grid, then loaded downstream in one transaction. See docs/catalog-sync.md.

Modules: ``kinds`` (file kinds, column mapping), ``gtin`` (GS1 check digit), ``diff`` (against the
last accepted version), ``tables`` / ``store`` (versions, audit, gated load), ``checks`` (suites plus
the pandas-side checks), ``tasks`` (the DAG's task functions), ``history`` (the audit printer CLI).
"""
