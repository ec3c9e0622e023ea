"""The live lab as front ends see it: the runtime, the TUI's session, the snapshot feed, replay, bench."""
