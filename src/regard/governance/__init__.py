"""Accountability: access keys and their scopes (audit ledger, policies, retention, erasure to
come). The domain layer: no HTTP here."""
