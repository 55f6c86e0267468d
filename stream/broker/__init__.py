"""A real Apache Kafka broker on loopback, without Docker.

One KRaft node (``process.roles=broker,controller``) from the ``kafka_2.13`` jars on Maven
Central, run as a plain ``java`` process.  Needs Java 17+ always, and Maven (``mvn``) once,
to fetch the classpath into a cache folder (see :mod:`stream.broker.classpath`; in a
checkout ``<repo>/.cache/kafka/``, git-ignored; about 45 MB).

As a library (standard library + kafka-python only)::

    from stream.broker import LocalBroker
    with LocalBroker(partitions=3) as kafka:
        kafka.create_topic("features", partitions=3)
        produce_to(kafka.bootstrap_servers)

As a command (``python deploy/kafka/broker.py`` in a checkout is the same)::

    python -m stream.broker fetch                  # only fetch the classpath (Maven)
    python -m stream.broker run [--port 9092]      # foreground broker until Ctrl-C
    python -m stream.broker check                  # start, round-trip a message, stop

Modules: ``classpath`` (Java, Maven, the cached classpath; ``pom.xml`` and
``log4j2.properties`` are package data beside it), ``local`` (:class:`LocalBroker`),
``admin`` (topic helpers for any broker), ``reading`` (:func:`read_to_end`, a topic read
back to its end offsets), ``process`` (child-process helpers), ``cli``.

Environment:
    STREAMDRIFT_KAFKA_CACHE      classpath cache folder (default: see above)
    STREAMDRIFT_KAFKA_JVM_OPTS   extra JVM options for the broker, appended last
    JAVA_HOME                    used before ``java`` on PATH
"""

from stream.broker.admin import admin_client, create_topic, delete_topics
from stream.broker.classpath import (
    cache_dir,
    cached_classpath,
    fetch_classpath,
    find_java,
    find_mvn,
    java_major,
    kafka_version,
    local_broker_unavailable_reason,
)
from stream.broker.errors import BrokerError
from stream.broker.local import LocalBroker
from stream.broker.reading import read_to_end

__all__ = [
    "BrokerError",
    "LocalBroker",
    "admin_client",
    "cache_dir",
    "cached_classpath",
    "create_topic",
    "delete_topics",
    "fetch_classpath",
    "find_java",
    "find_mvn",
    "java_major",
    "kafka_version",
    "local_broker_unavailable_reason",
    "read_to_end",
]
