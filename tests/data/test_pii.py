"""mask_pii: every kind of personal data is replaced, and what makes tickets similar is left alone."""

from __future__ import annotations

import pytest

from tickettune.data.pii import mask_pii


@pytest.mark.parametrize(("text", "expected"), [
    # e-mail addresses
    ("mail john.doe@example.com now", "mail [EMAIL] now"),
    ("From: Ana Ruiz <ana.ruiz+it@mail.example.co.uk>", "From: Ana Ruiz <[EMAIL]>"),
    # phone numbers
    ("call +44 20 7946 0958 today", "call [PHONE] today"),
    ("desk (555) 123-4567 x12", "desk [PHONE]"),
    ("mobile 07700900123.", "mobile [PHONE]."),
    ("ring +447700900123", "ring [PHONE]"),
    ("Tel: 020 7946 0123", "Tel: [PHONE]"),
    # IPv4 and IPv6
    ("server 192.168.10.25 is down", "server [IP] is down"),
    ("subnet 10.0.0.0/24.", "subnet [IP]."),
    ("gateway 2001:db8::8a2e:370:7334 unreachable", "gateway [IP] unreachable"),
    ("link-local fe80::1%eth0 only", "link-local [IP] only"),
    # URLs
    ("see https://intranet.example.com/kb?id=5&x=1.", "see [URL]."),
    ("go to www.example.org/help now", "go to [URL] now"),
    # user ids
    ("user john.doe is locked", "user [USER] is locked"),
    ("ask Jane.Smith2 about it", "ask [USER] about it"),
    (r"login CORP\jsmith failed", "login [USER] failed"),
    (r"EMEA\john.doe cannot log in", "[USER] cannot log in"),
    (r"saved in C:\Users\jdoe\Desktop", r"saved in C:\Users\[USER]\Desktop"),
    ("username: jdoe01", "username: [USER]"),
])
def test_masks_each_kind(text, expected):
    assert mask_pii(text) == expected


@pytest.mark.parametrize("text", [
    "Office version 16.0.17328.20142 and client v2.4.1 after upgrade to 10.2.3",
    "version 1.2.3.4 of the firmware, build 10.0.19045.2965",
    "error 0x80070005 access denied",
    "Chrome shows ERR_CONNECTION_RESET and the API returns HTTP 503",
    "duplicate of INC0012345, problem PRB0040001, change CHG0031234",
    "opened 2024-03-15 10:42:07, due 15/03/2024 or 03.15.2024",
    "Outlook.exe crashed.Then setup.msi from example.com failed",
    r"\\FILESRV01\share and Finance\Reports are mapped",
    "at 10:30:15 the MAC 00:1A:2B:3C:4D:5E dropped",
    "KB5034441 on asset LT-04512, serial 5CG1234XYZ, 1200 users on 3 floors",
    "e.g. the printer, i.e. the big one, etc.",
    "GSS-API error on ::1 loopback",
])
def test_leaves_versions_codes_numbers_and_dates(text):
    assert mask_pii(text) == text


def test_masks_several_kinds_in_one_ticket():
    text = ("Hi, my account john.doe (CORP\\jdoe) is locked. I'm on 10.20.30.41, "
            "call me on +1 555-0142 or mail john.doe@example.com. KB: https://kb.example.com/a/1. Error 0x80070005.")
    masked = mask_pii(text)
    assert masked == ("Hi, my account [USER] ([USER]) is locked. I'm on [IP], "
                      "call me on [PHONE] or mail [EMAIL]. KB: [URL]. Error 0x80070005.")


def test_rejects_non_text():
    with pytest.raises(TypeError):
        mask_pii(None)
