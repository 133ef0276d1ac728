"""placeholder"""
from __future__ import annotations


def looks_like_invoice(text: str) -> bool:
    return False


def extract_fields(result):
    return None
