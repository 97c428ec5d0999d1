"""Consent, erasure, retention, access control and the audit log: what a data steward operates."""
