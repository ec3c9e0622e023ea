from cli.common import placeholder


def register(sub) -> None:
    for name, text in (("up", "build the lab"), ("down", "destroy the lab"), ("plan", "show drift"),
                       ("heal", "apply Terraform to repair drift"), ("status", "show the lab")):
        placeholder(sub, name, text, 4)
