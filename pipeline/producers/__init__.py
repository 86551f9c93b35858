"""How documents come in: the HTTP ingestion API (`api`) and its API keys (`keys`), JSON lines
from files and pipes (`ingest`), demo load (`generate`), and their progress line (`progress`).

Uses `pipeline.runtime` (settings, producing, topics) and the layers below it.
"""
