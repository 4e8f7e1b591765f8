"""Names kept in both of Trellis' languages."""

from django.utils import translation


def in_language(english: str, korean: str) -> str:
    """The Korean name when the active language is Korean and one is given, else the English."""
    if korean and (translation.get_language() or "").startswith("ko"):
        return korean
    return english
