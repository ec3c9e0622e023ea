"""The live lab as front ends see it: the engine (one per running lab), the TUI's session over it,
the snapshot feed, replay, the preset matrix and bench."""
