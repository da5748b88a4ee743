"""Tickets in, pairs out: reading any ticket export, PII masking, the synthetic sample, the leakage-free split
into curriculum and test pairs, their files, their checks and the leakage guard. Imports only `core`."""
