"""Prometheus metric names: what the runtime and the lag monitor export, and what the generated
alert rules and dashboards query. Names only, so `topo generate` needs no metrics client.
"""

# The runtime's own series.
# Without the _total suffix prometheus-client adds to counters).
PUBLISHED = "topo_events_published"
PUBLISH_FAILED = "topo_events_publish_failed"
CONSUMED = "topo_events_consumed"
FAILED = "topo_events_failed"
RETRIED = "topo_events_retried"
DEAD_LETTERED = "topo_events_dead_lettered"
DUPLICATES = "topo_events_duplicates"
HANDLER_DURATION = "topo_handler_duration_seconds"
LATENCY = "topo_event_latency_seconds"
IN_FLIGHT = "topo_in_flight_events"
PAUSED_PARTITIONS = "topo_paused_partitions"
LAST_PROGRESS = "topo_consumer_last_progress_timestamp_seconds"

# The lag monitor (`topo monitor`).
# Kafka, per partition (kafka-lag-exporter names, plus event_type and chain_id labels).
KAFKA_GROUP_LAG = "kafka_consumergroup_group_lag"
KAFKA_GROUP_LAG_SECONDS = "kafka_consumergroup_group_lag_seconds"
KAFKA_GROUP_OFFSET = "kafka_consumergroup_group_offset"
KAFKA_LATEST_OFFSET = "kafka_partition_latest_offset"
# Kafka, per group and per group and topic.
KAFKA_GROUP_MAX_LAG = "kafka_consumergroup_group_max_lag"
KAFKA_GROUP_MAX_LAG_SECONDS = "kafka_consumergroup_group_max_lag_seconds"
KAFKA_GROUP_SUM_LAG = "kafka_consumergroup_group_sum_lag"
KAFKA_GROUP_TOPIC_SUM_LAG = "kafka_consumergroup_group_topic_sum_lag"
# RabbitMQ, per queue of a group.
RABBIT_QUEUE_LAG = "topo_rabbitmq_queue_lag"
RABBIT_QUEUE_LAG_SECONDS = "topo_rabbitmq_queue_lag_seconds"
RABBIT_QUEUE_READY = "topo_rabbitmq_queue_messages_ready"
RABBIT_QUEUE_UNACKED = "topo_rabbitmq_queue_messages_unacked"
RABBIT_QUEUE_CONSUMERS = "topo_rabbitmq_queue_consumers"
# Both brokers, per group.
GROUP_MEMBERS = "topo_consumergroup_members"
GROUP_SLOW = "topo_consumergroup_slow"
GROUP_STALLED = "topo_consumergroup_stalled"
GROUP_DEAD_LETTERS = "topo_consumergroup_dead_letter_events"
# The monitor itself.
MONITOR_UP = "topo_lag_monitor_up"
MONITOR_POLL_SECONDS = "topo_lag_monitor_poll_duration_seconds"
MONITOR_LAST_POLL = "topo_lag_monitor_last_poll_timestamp_seconds"
MONITOR_ERRORS = "topo_lag_monitor_poll_errors"  # counter: exposed as ..._total
