"""Wire contracts of tokentrail (DESIGN section 4): models, signing, JSON helpers, JSON Schema."""
