"""Flat, named exceptions, and the words for failures that are not ours to name. Every message here is written
for the person who typed the command."""


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


class JobRefused(ImagineError):
    """An RQ job names a function that is not one of the project's job functions (`core.queue.JOB_FUNCTIONS`): the
    worker neither imports nor runs it, and does not retry it."""


class MalformedPayload(ImagineError, ValueError):
    """A job payload (or a spec in it) is not one this project writes: a missing, unknown, mistyped or out-of-range
    field, a bad id, or too large. The message names the field; the worker fails such a job once, without retry."""


class TierConfigError(ImagineError, ValueError):
    """A tiers file, a guild's override or an admin's change names an unknown tier or sets contradictory limits."""


class TierLimit(ImagineError):
    """The request asks for more than the member's tier allows (a model, a size, steps, jobs from one command)."""


class Banned(ImagineError):
    """An admin banned the member from this server's image generation; nothing was queued."""


class RateLimited(ImagineError):
    """Too many requests in the last minute; the message says when to try again."""


class TooManyJobs(ImagineError):
    """The member has as many jobs queued or running as the tier allows; the message says how many."""


class QuotaExceeded(ImagineError):
    """The fast GPU time of this period is used up and the tier has no relax mode; the message says when it resets."""


class AdminInputError(ImagineError, ValueError):
    """An admin command's argument is not acceptable (a negative or absurd grant, a bad duration); nothing changed."""


class NotAdmin(ImagineError):
    """An `/admin` command from someone without Manage Server or a configured admin role; nothing changed."""


class PromptBlocked(ImagineError):
    """The prompt matched the server's block list; nothing was queued or charged. The message never repeats it."""

    def __init__(self, message: str, notice: str = "") -> None:
        super().__init__(message)
        self.notice = notice  # the text for the moderation log channel (names the prompt): never for the member


class Suspended(ImagineError):
    """The member is suspended from the bot on this server (repeated blocked prompts, or an admin); nothing queued."""


class JobExpired(ImagineError):
    """A button or command names a job whose record (or images) Redis no longer holds."""


class NotYourJob(ImagineError):
    """Someone tried to act on another user's job without Manage Server."""


QUEUE_UNREACHABLE = "The queue is unreachable, try again in a minute."
"""What a member is told when Redis does not answer (any `redis.RedisError`)."""

UNEXPECTED = "Something went wrong on our side; it has been logged. Try again in a minute."
"""What a member is told when handling their interaction hit a bug (the error itself is logged)."""


class RepostRefused(ImagineError):
    """A stored result may not be posted here (another member's job, another server, or an age-restricted origin);
    nothing was posted or charged. The message names the reason."""


class MalformedInteraction(ImagineError):
    """A command or component interaction the bot cannot have offered: an option missing, unknown or of the wrong type,
    a command it no longer has, a custom_id in its namespace that no button or menu of it carries. Nothing was done."""


class EditRefused(ImagineError):
    """An editing button (Zoom Out, Make Square, Pan, Vary (Region)) asks for an image the model cannot make: past its
    aspect limit, or a square of a square; nothing was queued or charged."""


class ImageRefused(PromptError):
    """An image given by link or attachment may not be used: another host, plain http, a private address, too many
    bytes or pixels, not an image, or too slow to arrive. The message names the rule; nothing is charged."""
