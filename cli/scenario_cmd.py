from cli.common import placeholder


def register(sub) -> None:
    placeholder(sub, "scenario", "run scripted scenarios with reports", 8)
    placeholder(sub, "bench", "benchmark up, failover and down", 8)
