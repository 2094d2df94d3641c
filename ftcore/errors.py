"""Errors a user can act on. Each message names the field, file, row or model at fault."""


class FtflowError(Exception):
    """Base of errors caused by input or environment, reported without a traceback by the CLI."""


class ConfigError(FtflowError):
    """The config is invalid: unknown key, bad value, or a file it names does not exist."""


class DataError(FtflowError):
    """A dataset file or row is malformed."""


class ModelNotAvailableError(FtflowError):
    """A model reference cannot be resolved to local files (offline, not cached, unknown)."""


class ServiceUnavailableError(FtflowError):
    """A service the job needs (e.g. the MLflow tracking server) does not answer."""


class DivergedError(FtflowError):
    """Training produced a NaN or infinite loss; the same settings would diverge again."""


class OutOfMemoryError(FtflowError):
    """The job ran out of (GPU or host) memory; the message names the settings that need less."""


# The settings that cut training memory, named by every out-of-memory message.
MEMORY_HINT = (
    "settings that need less memory: a smaller train.per_device_train_batch_size (raise "
    "train.gradient_accumulation_steps to keep the effective batch), a smaller data.cutoff_len, "
    "train.speed.gradient_checkpointing: true, train.finetuning_type: lora, or a 4-bit base "
    "(train.quantization.bit: 4, LLaMA-Factory's quantization_bit)"
)
