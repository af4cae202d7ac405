"""Wire contracts of tokentrail (docs/architecture.md, Contracts): models, signing, JSON helpers, JSON Schema."""
