"""Flat, named exceptions. Their messages are written for the person who typed the command."""


class ImagineError(Exception):
    """Base class of every error this project raises on purpose."""


class PromptError(ImagineError, ValueError):
    """The prompt or one of its parameters is not acceptable; the message names it and says what is allowed."""


class JobCancelled(ImagineError):
    """The job was cancelled by its owner or an admin; its partial images are discarded."""


class GenerationFailed(ImagineError):
    """The model could not produce images for this job; the message says why, in words a user understands."""


class TransientGenerationError(GenerationFailed):
    """A failure that may not happen again on a retry (out of memory, a device hiccup, a timeout)."""
