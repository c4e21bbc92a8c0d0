"""Errors meant for the user: the message is one line that names the bad field/value and the fix."""


class UserError(Exception):
    """Bad input or an unavailable resource; printed as one line, no traceback."""


class DatasetError(UserError):
    """A dataset file fails validation (message names file, row and field)."""


class AnswerSetError(UserError):
    """An answer word is not a single token for the model's tokenizer."""


class ModelUnavailableError(UserError):
    """The requested model cannot be loaded here (offline, missing file, bad checksum)."""


class UnsupportedArchitectureError(UserError):
    """The model's architecture breaks an assumption an exact method relies on."""
