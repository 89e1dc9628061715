"""Partner page (filled in below)."""


def build_portal(app, store, tokens):
    return None
