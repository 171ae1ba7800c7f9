"""The bulk engine: ``Batch`` and its item runner, jobs and outcomes, input readers, the
manifest (with adoption of unrecorded images), stats, pricing, ``metadata.jsonl`` and merge.

Built on the client core (``cometgen._client`` and below); nothing in the core imports it.
"""
