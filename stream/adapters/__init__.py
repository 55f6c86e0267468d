"""Adapters that feed streamdrift monitors from other stream processors (Faust)."""
