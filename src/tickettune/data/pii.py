"""Mask personal data in ticket text: e-mail addresses, phone numbers, IP addresses, URLs and user ids.

Placeholders keep a sentence readable for the model ("call me on [PHONE]"). What makes two tickets
about the same problem is left alone: version numbers (10.2.3, v2.4.1), error codes (0x80070005,
ERR_CONNECTION_RESET, HTTP 503), ticket numbers (INC0012345) and dates.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable

PLACEHOLDERS = {"url": "[URL]", "email": "[EMAIL]", "user": "[USER]", "ip": "[IP]", "phone": "[PHONE]"}

URL = re.compile(r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"'()\[\]]+[^\s<>\"'()\[\].,;:!?]")
EMAIL = re.compile(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b")
# C:\Users\jdoe\Desktop: only the profile name is personal.
PROFILE_PATH = re.compile(r"(?i)\b([a-z]:\\users\\)(?!public\b|default\b)([^\\\s]+)")
# DOMAIN\user; Windows domains are written in capitals, which keeps folder paths such as Finance\Reports out.
DOMAIN_USER = re.compile(r"(?<![\w\\/:.])[A-Z][A-Z0-9-]{1,14}\\[A-Za-z][\w.$-]{0,30}(?<![.$-])")
IPV6 = re.compile(r"(?i)(?<![\w:.])(?:[0-9a-f]{0,4}:){2,7}(?:[0-9a-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?:%\w+)?(?![\w:])")
IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                  r"(?:/\d{1,2})?(?!\w|\.\d)")
PHONE = re.compile(r"""(?ix)(?<![\w.+/-])(?:
        \+\d{8,14}                                  # +447700900123
      | (?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?  # country code, (area code)
        \d{2,4}(?:[\s.-]\d{2,4}){1,4}               # digit groups
    )(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w-]|\.\d)""")
# Digits after a phone word count even without separators ("mobile 07700900123").
PHONE_AFTER_WORD = re.compile(r"(?i)(\b(?:tel|phone|mobile|mob|cell|call me on|call me at|reach me on|ph)\.?\s*[:#]?\s*)"
                              r"(\+?\d{7,15})\b")
USER_AFTER_WORD = re.compile(r"(?i)(\b(?:user\s?name|user\s?id|login(?:\s?id)?|account\s?name|samaccountname|uid)"
                             r"\s*[:=]\s*)([a-z][\w.-]{1,30}[a-z0-9])")
# john.doe / John.Doe: two name-like parts; "Outlook.exe", "example.com" and "crashed.Then" are not user ids.
DOTTED_USER = re.compile(r"(?<![\w.@/\\-])(?:[a-z]{2,}\.[a-z]{2,}|[A-Z][a-z]+\.[A-Z][a-z]+)\d{0,4}(?![\w@-]|\.\w)")
NOT_USER_SUFFIXES = frozenset("""
    exe dll msi bat cmd ps sh py js ts jar ini cfg conf config log txt csv tsv json xml yaml yml html htm php asp aspx
    pdf doc docx xls xlsx xlsm ppt pptx pst ost msg eml zip rar gz tar iso img vhd vhdx png jpg jpeg gif bmp mp mov
    avi wav sql bak db mdb accdb vsd vsdx one url lnk tmp dat bin sys drv cab ocx
    com net org edu gov int io co uk de fr nl be ch at es it eu us ca au in jp cn ru br local lan corp intra internal
    app dev cloud online site info biz tech ai me tv ly
""".split())
DATE = re.compile(r"\b(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})\b")
VERSION_WORD = re.compile(r"(?i)(?:\bversion|\bver\.?|\bbuild|\brelease|\bfirmware|\bpatch|\bv)\s*$")


def _ipv6(match: re.Match) -> str:
    candidate = match.group(0)
    if sum(c.isalnum() for c in candidate) < 2:
        return candidate
    try:
        ipaddress.IPv6Address(candidate.split("%", 1)[0])
    except ValueError:  # times (10:30:15), MAC addresses, C++ scopes
        return candidate
    return PLACEHOLDERS["ip"]


def _ipv4(match: re.Match) -> str:
    before = match.string[max(0, match.start() - 12):match.start()]
    return match.group(0) if VERSION_WORD.search(before) else PLACEHOLDERS["ip"]


def _phone(match: re.Match) -> str:
    candidate = match.group(0)
    digits = sum(c.isdigit() for c in candidate)
    before = match.string[max(0, match.start() - 12):match.start()]
    if not 7 <= digits <= 15 or DATE.search(candidate) or VERSION_WORD.search(before):
        return candidate
    return PLACEHOLDERS["phone"]


def _dotted_user(match: re.Match) -> str:
    name = match.group(0).rstrip("0123456789")
    first, _, second = name.lower().partition(".")
    return match.group(0) if second in NOT_USER_SUFFIXES or first in ("www", "e", "i") else PLACEHOLDERS["user"]


def _keep_prefix(placeholder: str) -> Callable[[re.Match], str]:
    return lambda match: match.group(1) + placeholder


# Order matters: URLs first (they may hold addresses and user names), addresses before the looser patterns.
RULES: tuple[tuple[re.Pattern, str | Callable[[re.Match], str]], ...] = (
    (URL, PLACEHOLDERS["url"]),
    (EMAIL, PLACEHOLDERS["email"]),
    (PROFILE_PATH, _keep_prefix(PLACEHOLDERS["user"])),
    (DOMAIN_USER, PLACEHOLDERS["user"]),
    (IPV6, _ipv6),
    (IPV4, _ipv4),
    (PHONE_AFTER_WORD, _keep_prefix(PLACEHOLDERS["phone"])),
    (PHONE, _phone),
    (USER_AFTER_WORD, _keep_prefix(PLACEHOLDERS["user"])),
    (DOTTED_USER, _dotted_user),
)


def mask_pii(text: str) -> str:
    """Replace e-mail addresses, phone numbers, IPv4/IPv6 addresses, URLs and user ids in `text` with placeholders."""
    if not isinstance(text, str):
        raise TypeError(f"mask_pii expects a str, got {type(text).__name__}")
    for pattern, replacement in RULES:
        text = pattern.sub(replacement, text)
    return text


def mask_pair_texts(frame):
    """A copy of a pair or ticket table with mask_pii applied to its texts (text1, text2, negative, text)."""
    frame = frame.copy()
    for column in ("text1", "text2", "negative", "text"):
        if column in frame:
            frame[column] = [mask_pii(t) if isinstance(t, str) else t for t in frame[column]]
    return frame
