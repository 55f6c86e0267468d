"""Column episodes (the union of their detectors' episodes) and their configuration."""

from __future__ import annotations

from stream.config import parse_config
from stream.engine.baselines import detection_settings
from stream.engine.episodes import Detection, EpisodeBook
from tests.support.configs import config_errors, minimal_config


def det(detector: str, index: int, statistic: float = 2.0, feature: str = "x") -> Detection:
    return Detection("m", feature, detector, index, statistic, 1.0)


def test_a_column_episode_opens_with_the_first_detector_and_closes_with_the_last():
    book = EpisodeBook(("t", 3))
    ep = book.opened(det("cusum", 100), now=1.0)
    assert ep is not None and ep.opened == 100 and ep.partition == ("t", 3)
    assert book.opened(det("ks", 150, 3.0), now=2.0) is None  # the same column episode
    assert book.opened(det("ks", 150, 1.5, feature="y"), now=2.0) is not None  # another
    assert book.closed(det("cusum", 900, 2.5)) is None  # ks still open
    assert book.opened(det("cusum", 950), now=3.0) is None  # cusum again, same episode
    assert book.closed(det("cusum", 1000)) is None
    done = book.closed(det("ks", 1200, 4.0))
    assert done is ep and ep.closed == 1200
    assert ep.to_dict() == {"model": "m", "feature": "x", "open_index": 100,
                            "close_index": 1200, "detectors": ["cusum", "ks"],
                            "peak_score": 4.0}
    assert list(book.open) == [("m", "y", "")]
    assert book.closed(det("adwin", 5)) is None  # not open: nothing to close


def test_restored_open_detectors_make_an_open_episode_of_unknown_start():
    book = EpisodeBook(("t", 0))
    book.restore("m", "x", ["ks"], now=5.0)
    book.restore("m", "y", [], now=5.0)
    assert list(book.open) == [("m", "x", "")]
    ep = book.closed(det("ks", 10))
    assert ep is not None and ep.opened is None and ep.closed == 10


def test_detection_episodes_settings():
    cfg = parse_config(minimal_config(detection={"episodes": {"release": 0.5,
                                                              "close_after_events": 300}}),
                       "/cfg")
    s = detection_settings(cfg.detection)
    assert (s.release, s.release_values) == (0.5, 300)
    default = detection_settings(parse_config(minimal_config(), "/cfg").detection)
    assert (default.release, default.release_values) == (0.5, 1000)


def test_detection_episodes_errors_name_the_key():
    errors = config_errors(minimal_config(detection={"episodes": {"release": 1.5}}))
    assert any("detection.episodes.release" in e and "<= 1" in e for e in errors), errors
    errors = config_errors(minimal_config(detection={"episodes": {"close_after_events": 0}}))
    assert any("detection.episodes.close_after_events" in e for e in errors), errors
    errors = config_errors(minimal_config(detection={"episodes": {"hold": 3}}))
    assert any("detection.episodes" in e and "hold" in e for e in errors), errors
