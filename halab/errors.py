"""Exceptions with messages a user can act on. The CLI maps them to exit codes."""


class HalabError(Exception):
    """Base for every error halab reports to the user (exit status 1)."""

    exit_code = 1


class ConfigError(HalabError):
    """The lab definition is invalid. Carries one message per problem (exit status 2)."""

    exit_code = 2

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class UsageError(HalabError):
    """The command was asked something it cannot do (bad node name, other lab's object)."""

    exit_code = 2


class NotAvailableYet(HalabError):
    """A command whose capability has not landed yet."""

    exit_code = 3
