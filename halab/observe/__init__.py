"""Watching the lab: probes, traffic, the timeline. Never imports breaking it."""
