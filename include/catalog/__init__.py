"""Catalog sync: catalogs, price lists and promotions from partners, diffed, acknowledged on
Trading Grid, then loaded downstream in one transaction. See docs/catalog-sync.md.

Modules: ``kinds`` (file kinds, column mapping), ``gtin`` (GS1 check digit), ``diff`` (against the
last accepted version), ``tables`` / ``store`` (versions, audit, gated load), ``checks`` (suites plus
the pandas-side checks), ``intake`` (the catalog sub-folders, one interval's listing), ``receive``
(the SFTP side over the kit), ``payloads`` (the TG posts), ``publish`` (plan -> bulk post operator ->
record), ``decision`` (the retailer's answer and the load), ``runtime`` (Airflow glue), ``history``
(the audit printer CLI).
"""
