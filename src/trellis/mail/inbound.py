"""Receiving mail: the raw store, processing, the quarantine."""
