"""Input formats: raw messages of a poll batch decoded into per-model numpy columns."""
