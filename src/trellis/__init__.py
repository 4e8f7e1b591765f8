"""Trellis: a self-hosted, process-aware CRM."""
