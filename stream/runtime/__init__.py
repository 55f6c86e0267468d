"""The commands' loops: the Kafka runner of ``run`` and the file replay."""
