from cli.common import placeholder


def register(sub) -> None:
    for name in ("kill", "revive", "pause", "resume", "reboot", "netcut", "netrestore", "netem",
                 "stop-service", "start-service", "restore", "watch", "measure"):
        placeholder(sub, name, f"fault/measure command '{name}'", 6)
