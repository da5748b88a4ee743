"""A ServiceNow Table API stand-in instance with users, groups and incidents, shared by the pull and sync tests."""

from __future__ import annotations

from tickettune.sources.servicenow_standin import Instance, make_incidents

USER, PASSWORD = "svc_tickettune", "s3cret-pw"


def new_instance(n: int = 250, same_second: int = 1) -> Instance:
    instance = Instance(users={USER: PASSWORD}, oauth_clients={"client-1": "client-secret"})
    instance.add_groups(["Network", "Service Desk", "Desktop"])
    instance.add_incidents(make_incidents(n, instance.group_ids, same_second=same_second))
    return instance
