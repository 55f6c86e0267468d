"""Helpers shared by the tests, imported as ``tests.support.<module>``.

=================  ===========================================================================
``ports``          ``free_port()``, ``free_ports(n)``: free TCP ports on 127.0.0.1
``policy``         ``in_ci()``, ``unavailable(msg)``, ``require_tool(*names)``, ``find_binary``:
                   skip on a developer machine, fail under CI
``waiting``        ``wait_for(predicate, timeout, message, ...)``
``scripts``        ``load_script(path)``: the repository's scripts that are no package's modules
``events``         synthetic events of model ``m1`` (``Regime``, ``m1_event``, ``m1_events``,
                   ``with_poison``, ``clipped_m1_events``, ``write_clipped_reference``)
``configs``        ``m1_config(...)`` / ``write_config(path, data)`` for ``streamdrift run``;
                   ``minimal_config(...)``, ``config_errors(...)`` for the config unit tests
``kafka``          ``kafka_bootstrap_servers(workdir)``: a real broker while a block runs;
                   ``local_broker_module()``, ``topic_name(request)``, ``produce(...)``,
                   ``EventProducer`` (a paced producer thread)
``processes``      ``StreamdriftRun`` (``streamdrift run`` as a subprocess), ``stop_process``,
                   ``pid_alive``
``runs``           ``InProcess`` (a runner on a thread of the test process), ``AlarmLog``,
                   ``committed(...)``, ``checkpoints(config)``, ``cached_baselines()``
``metrics``        ``http_get``, ``scrape``, ``samples``, ``sample``: a ``/metrics`` endpoint;
                   ``promtool_check_metrics(text)``
``servers``        ``start_prometheus``, ``start_alertmanager`` (``ServerProcess``),
                   ``query``, ``query_range``, ``finite_values``; ``PROMETHEUS``,
                   ``ALERTMANAGER`` (binary names)
``webhook``        ``Webhook``: an HTTP server recording Alertmanager notifications
``tls``            ``make_pki(folder)``: test certificates made with ``openssl``
``promql``         the metrics contract of docs/metrics.md and a PromQL checker
``estimate``       ``estimate_stream(...)``: predictions under covariate shift (labels.estimate)
``images``         the container image: ``streamdrift_image()`` (built with podman from a
                   local base, or reused), ``ContainerRun`` (``podman run --network=host``)
``e2e``            the end-to-end pipeline: Kafka -> ``streamdrift run`` -> Prometheus ->
                   Alertmanager -> webhook
=================  ===========================================================================
"""

from pathlib import Path

#: the root of the repository
REPO = Path(__file__).resolve().parents[2]
