"""Errors a person can act on, each carrying the HTTP status a web front end should use."""


class InputError(ValueError):
    """An upload or data file that cannot be used; `message` is written for the person who sent it."""

    status: int = 422

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class UnsupportedFormat(InputError):
    status = 415


class CorruptImage(InputError):
    status = 400


class NotAChestXray(InputError):
    """The file decodes, but it is not something the model may judge (wrong modality, OOD)."""

    status = 422


class ModelBundleError(RuntimeError):
    """The model directory is missing, incomplete or inconsistent; the message says how to fix it."""
