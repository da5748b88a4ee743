"""Reasons: shared fields, error codes and terms, worked by hand."""

from tickettune.serving.reasons import codes_of, terms_of, why


def test_shared_fields_codes_and_terms():
    query = {"text": "Outlook error 0x800CCC0E: mailbox sync fails, ORA-12154 too", "cmdb_ci": "Exchange Online",
             "assignment_group": "Messaging", "state": "New"}
    hit = {"text": "0x800ccc0e when Outlook syncs the mailbox (ora-12154)", "cmdb_ci": "Exchange Online",
           "assignment_group": "Service Desk", "state": "New"}
    assert why(query, hit) == {"fields": {"cmdb_ci": "Exchange Online"}, "codes": ["0x800ccc0e", "ora-12154"],
                               "terms": ["outlook", "mailbox"]}


def test_nothing_shared_is_empty_and_empty_fields_never_match():
    assert why({"text": "printer jams", "cmdb_ci": ""}, {"text": "vpn drops", "cmdb_ci": ""}) == \
        {"fields": {}, "codes": [], "terms": []}


def test_codes_and_terms():
    assert codes_of("KB5034441 failed with 0x80070005, HTTP 503 twice; 42 users") == ["kb5034441", "0x80070005", "503"]
    assert terms_of("Please help: the VPN keeps dropping since this morning, error again") == ["vpn", "keeps", "dropping"]
