"""The bottom layer: the user-error type, atomic output folders, text and JSON files, model loading and
fingerprints, embeddings and their on-disk cache. It imports nothing else of tickettune."""
