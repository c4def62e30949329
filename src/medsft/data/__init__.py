"""Data: records, readers, mixture, templates, encoding, inspection. Pure Python, no torch."""
