"""Errors a user can cause. The CLI prints them as one line (no traceback) and exits 2."""


class UserError(Exception):
    """A problem the user can fix: the message names the cause and the fix, on one line."""


class ConfigError(UserError):
    pass


class ModelNotFound(UserError):
    pass


class UnsafeCheckpoint(UserError):
    pass
