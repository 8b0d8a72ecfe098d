"""Exception types whose messages are shown to users as they are."""


class UserError(Exception):
    """Bad input or configuration: the message names the file/key and the problem."""


class ConfigError(UserError):
    """params.yaml (or an override) does not match the schema."""


class DataError(UserError):
    """An input file (video, manifest, store, checkpoint) is unusable."""
