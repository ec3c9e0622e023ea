from cli.common import placeholder


def register(sub) -> None:
    placeholder(sub, "tui", "open the Textual interface", 7)
