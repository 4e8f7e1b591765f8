"""Approval processes: versioned definitions, requests that walk their steps, locked records,
timeouts and escalation, delegation, and the exception requests around the rules.

The engine is generic: a domain app registers which of its object types can be submitted and
which of its services writes their fields (``subjects.register``). Records are locked through
the write guard of ``core.records``, so every channel that writes a record is covered.
"""
