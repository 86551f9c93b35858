"""Derivations: pure functions from source documents (and registers) to derived documents.

A derivation is a class named in the catalog (`transform: derivations.segment:Toggles`) with
- `publish(source, register, previous) -> list of documents` for the derived collection, and
- optionally `update(source) -> list of register updates`, reduced into the register by the
  register schema's annotations. `register` is its value after the update, `previous` before it.
No I/O here: the pipeline owns state and hands it in. Arguments are read-only: the same source
document (a redelivery) or register may be handed in more than once, so build new documents
instead of modifying them.
"""
