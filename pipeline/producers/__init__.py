"""How documents come in: the HTTP ingestion API (`api`) and its API keys (`keys`), a Python
client for product events over that API (`client`: `from pipeline.producers.client import
Client`), JSON lines from files and pipes (`ingest`), demo load (`generate`), and their progress
line (`progress`).

Uses `pipeline.runtime` (settings, producing, topics) and the layers below it.
"""
