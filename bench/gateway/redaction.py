"""Redaction benchmark: CPU time of `gateway.redaction.redact` on adversarial inputs, beside two
baselines in one run: the previous patterns (commit 1bb73f8, kept below) and today's rules with
the email and number passes in Python (`regex_emails_and_numbers`, what ran before
gateway/_redaction.c).

    .venv/bin/python bench/gateway/redaction.py [--size-kib 1024] [--baseline-kib 64]

Each input repeats one unit (long runs of one pattern's characters, near misses, dense
matches) to the given size. The previous patterns run on `--baseline-kib` only (their email
pattern is quadratic: 1 MiB of `a` would take minutes); the regex passes and the compiled ones
on `--size-kib`, so their ratio and the figure at 1 MiB (target: under 50 ms) are side by side.
CPU time (time.process_time, best of 3) so other processes on the machine move the figures less.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway import redaction  # noqa: E402

INPUTS = {
    "letters": "a",
    "email near-misses": "a@",
    "dotted domains": "x@a.",
    "digits": "1",
    "spaced digits": "1 ",
    "phone-like groups": "12 34 ",
    "card numbers": "4111 1111 1111 1111 ",
    "ssn-like": "123-45-678 ",
    "key prefixes": "sk-",
    "jwt prefixes": "eyJ",
    "bearer words": "Bearer ",
    "url schemes": "a://",
    "pem headers": "-----BEGIN RSA PRIVATE KEY-----",
    "email addresses": "a.b@c.de ",
    "phones with area codes": "+1 (415) 555-0132 ",
    "prose with secrets": "Mail a.b@c.de, call +1 415-555-0132, key sk-proj-abcdefghijklmnopqrstu. ",
}

# ---- the previous patterns (gateway/redaction.py at 1bb73f8), the baseline -----------------
_OLD_SECRETS = re.compile(
    r"sk-ant-[A-Za-z0-9_\-]{8,}"
    r"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}"
    r"|tt_[0-9a-f]{16}_[A-Za-z0-9_\-]+"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*"
    r"|AKIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+"
)
_OLD_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_OLD_CARD = re.compile(r"(?<![\d.])\d(?:[ \-]?\d){12,18}(?![\d.])")
_OLD_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,4}\)[\s.\-]?)?\d{2,4}(?:[\s.\-]\d{2,4}){1,4}(?!\w)")


def _old_luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _old_card(match: re.Match[str]) -> str:
    return "[REDACTED:card]" if _old_luhn(re.sub(r"\D", "", match.group())) else match.group()


def _old_phone(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(char.isdigit() for char in text)
    grouped = text.startswith(("+", "(")) or any(sep in text for sep in " .-")
    return "[REDACTED:phone]" if 10 <= digits <= 15 and grouped else text


def old_redact(text: str) -> str:
    text = _OLD_SECRETS.sub("[REDACTED:api_key]", text)
    text = _OLD_EMAIL.sub("[REDACTED:email]", text)
    text = _OLD_CARD.sub(_old_card, text)
    return _OLD_PHONE.sub(_old_phone, text)


# ---------------------------------------------------------------------------------------------


def cpu_ms(function: Callable[[str], str], text: str, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        function(text)
        best = min(best, time.process_time() - started)
    return best * 1000


def with_passes(passes: Callable[[str], str]) -> Callable[[str], str]:
    """`redact` with its email and number passes replaced by `passes`."""

    def run(text: str) -> str:
        kept = redaction.mask_emails_and_numbers
        redaction.mask_emails_and_numbers = passes
        try:
            return redaction.redact(text)
        finally:
            redaction.mask_emails_and_numbers = kept

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-kib", type=int, default=1024)
    parser.add_argument("--baseline-kib", type=int, default=64)
    args = parser.parse_args()
    size, small = args.size_kib * 1024, args.baseline_kib * 1024
    regex_passes = with_passes(redaction.regex_emails_and_numbers)
    compiled = with_passes(redaction.compiled_emails_and_numbers)
    big, base = f"{args.size_kib} KiB", f"{args.baseline_kib} KiB"
    print(f"| input | previous patterns, {base} | regex passes, {big} | compiled passes, {big} | regex / compiled |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for name, unit in INPUTS.items():
        big_text = (unit * (size // len(unit) + 1))[:size]
        assert compiled(big_text) == regex_passes(big_text), name
        old = cpu_ms(old_redact, big_text[:small], repeat=1)
        before, after = cpu_ms(regex_passes, big_text), cpu_ms(compiled, big_text)
        worst = max(worst, after)
        print(f"| {name} | {old:,.1f} ms | {before:,.1f} ms | {after:,.1f} ms | {before / after:.1f}x |")
    print(f"\nworst figure with the compiled passes at {big}: {worst:,.1f} ms of CPU (target: under 50 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
