"""Search for the tools agents use: the index, encoders (PyTorch or ONNX), filters, reasons, tiers, the
service's store and sync, feedback verdicts, clusters, and the HTTP app with its page. Imports `core`, `data`,
`evaluation` and `sources`; never `training`."""
