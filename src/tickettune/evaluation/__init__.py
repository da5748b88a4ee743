"""Judging a model at the job: retrieval on held-out tickets, pair metrics with paired-bootstrap intervals,
same-problem probes, calibrated duplicate/related tiers, and the report with its plots. Imports `core` and
`data`."""
