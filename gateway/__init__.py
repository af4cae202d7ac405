"""The tokentrail gateway: an aiohttp reverse proxy in front of OpenAI and Anthropic that
checks identity, freezes and limits, relays every byte unchanged, and records one signed
RawCall per request to Kafka (spooling to local disk when Kafka is away)."""
