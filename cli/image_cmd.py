from cli.common import placeholder


def register(sub) -> None:
    placeholder(sub, "image", "build or list the offline base image", 3)
