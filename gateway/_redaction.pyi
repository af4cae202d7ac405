def mask_emails(text: bytes, /) -> bytes:
    """UTF-8 text with email addresses masked (gateway/_redaction.c)."""

def mask_numbers(text: bytes, /) -> bytes:
    """UTF-8 text with SSNs, card numbers and phone numbers masked (gateway/_redaction.c)."""
