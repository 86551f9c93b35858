"""The JSON document model: JSON pointers, JSON Schemas (with Segflow's `reduce` annotations),
validation (a compiled fast check with jsonschema's verdicts and messages behind it), and the
reducer compiled from a schema's annotations.

Pure: no I/O beyond reading schema files. Uses `pipeline.errors` only.
"""
