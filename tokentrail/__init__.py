"""tokentrail: every token has an owner."""
