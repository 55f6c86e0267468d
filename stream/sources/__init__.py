"""Where events come from: Kafka (kafka-python or confluent-kafka) and files."""
