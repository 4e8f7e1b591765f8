"""Suggesting a class for a new case from the words of past, classified cases."""


def suggest_kind(subject: str, text: str) -> str:
    """A ``Case.Kind`` value, or "" when there is nothing to go on."""
    return ""
