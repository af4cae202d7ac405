"""Real Apache Kafka for one machine: `tokentrail kafka up|down|status` and the helpers behind it.

- `tokentrail.broker.server`: `up`, `start_broker`, `stop_broker`, `running_broker` (KRaft, one node)
- `tokentrail.broker.admin`: `wait_ready`, `ensure_topics`, `delete_topics` (any cluster)
- `tokentrail.broker.jars`: Java check and the Maven fetch of the broker's jars (`pom.xml`)
"""
