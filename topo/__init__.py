"""topo: one declarative topology.yaml -> a whole event bus on Kafka or RabbitMQ."""
