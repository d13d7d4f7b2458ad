"""User-facing errors: the CLI prints them as one line, without a traceback."""


class ObjcropError(Exception):
    """Bad input or a failed precondition the user can fix.

    The message must name the file (or option) and what is wrong with it.
    """


class ConfigError(ObjcropError):
    """A config file or --opts entry that cannot be applied."""


class DatasetError(ObjcropError):
    """A dataset file that is missing, corrupt or inconsistent."""


class CheckpointError(ObjcropError):
    """A checkpoint that is damaged or belongs to another architecture."""
