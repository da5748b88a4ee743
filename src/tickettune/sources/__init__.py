"""Where tickets come from live: the ServiceNow Table API client, `tickettune pull`, and the Table API stand-in
the tests and benchmarks talk to. Imports only `core`."""
