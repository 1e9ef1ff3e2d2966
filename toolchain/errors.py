"""One error hierarchy for everything the user can get wrong or the tools can refuse.

Each class carries its own exit code; the CLI prints ``str(error)`` as one line and
shows the traceback only with ``-v``. This module imports nothing heavy.
"""

import errno


class ToolchainError(Exception):
    """Base class. ``exit_code`` is what the ``toolchain`` command exits with."""

    exit_code = 1


class ConfigError(ToolchainError):
    """A recipe or target profile is malformed, has unknown keys or wrong types."""

    exit_code = 3


class UnknownTargetError(ConfigError):
    """A recipe or command names a target profile that does not exist."""

    exit_code = 4


class InputError(ToolchainError):
    """A model file or data set named by the recipe cannot be used."""

    exit_code = 5


class DataShapeError(InputError):
    """The data does not fit the model, or breaks a data contract (labels, classes, split sizes)."""

    exit_code = 6


class OfflineError(InputError):
    """Something would need the network (pretrained weights, a remote data set)."""

    exit_code = 7


class ConversionError(ToolchainError):
    """The TFLite converter (or a compression step) failed."""

    exit_code = 8


class CompressionError(ConversionError):
    """A compression step (QAT, pruning, distillation) cannot handle the model."""

    exit_code = 15


class CompatibilityError(ToolchainError):
    """The recipe asks for something a target cannot run, the model does not fit it, or its compiler refuses it."""

    exit_code = 9


class RuntimeValidationError(ToolchainError):
    """An emulated runtime could not load or run an artifact, or a target check failed."""

    exit_code = 10


class GateFailure(ToolchainError):
    """A build finished but one or more acceptance gates or budgets failed."""

    exit_code = 11


class PackagingError(ToolchainError):
    """A release bundle could not be written or read."""

    exit_code = 12


class BundleMalformed(PackagingError):
    """A bundle is unreadable or unsafe (absolute paths, '..', links), or an artifact in it does not load."""

    exit_code = 13


class BundleTampered(PackagingError):
    """A bundle's files do not match the hashes in its manifest."""

    exit_code = 14


class MissingBuildError(ToolchainError):
    """A command needs a build that is not there (`compare` without `--build`)."""

    exit_code = 16


class NonFiniteError(ToolchainError):
    """A NaN or infinity appeared: in the data, in training (it diverged), or in a model's outputs."""

    exit_code = 17


class BuildLockedError(ToolchainError):
    """Another build holds the output folder (`--no-wait` was given)."""

    exit_code = 18


class RegressionError(ToolchainError):
    """`toolchain diff --fail-on`: build B regressed past a threshold against build A."""

    exit_code = 20


class MissingExtraError(ToolchainError):
    """The recipe needs an optional part of the toolchain that is not installed (PyTorch, ONNX): the message names
    the `pip install` to run."""

    exit_code = 21


class MissingInputError(ToolchainError):
    """A file or folder the command or the recipe names does not exist: a recipe, a bundle, a model or data file."""

    exit_code = 22


class SchedulerError(ToolchainError):
    """`--scheduler`: the Dask scheduler cannot be reached, or has no workers to run on."""

    exit_code = 23


class StorageError(ToolchainError):
    """`toolchain search --storage`: the study database cannot be opened (a bad URL, a server that does not
    answer, a folder that does not exist), or holds no such study."""

    exit_code = 24


class InfeasibleError(ToolchainError):
    """`toolchain search` finished, but for a target no trial met its constraints: the closest one is reported."""

    exit_code = 25


#: OS errors that are the user's environment, not a bug (read-only, full, permissions, name too long).
FILESYSTEM_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG}


class FilesystemError(ToolchainError):
    """The build cannot write where it must: read-only, no space left, permission denied, name too long."""

    exit_code = 19


#: Exit codes that are not a ``ToolchainError``: what the ``toolchain`` command exits with besides the classes above.
OTHER_EXIT_CODES = {
    0: "success: every gate passed",
    1: "internal error (a bug: please report it with the output of `-v`)",
    2: "command-line usage",
    130: "interrupted (Ctrl-C / SIGINT); temp files removed",
    143: "terminated (SIGTERM, as `timeout` and CI send); temp files removed",
}

#: A build's failure kinds, most basic first: the first kind present picks the error (and exit code).
FAILURE_KINDS: dict[str, type[ToolchainError]] = {
    "fit": CompatibilityError,  # 9: a memory budget is exceeded
    "compat": CompatibilityError,  # 9: the device's compiler or delegate refuses the model
    "nonfinite": NonFiniteError,  # 17: an artifact's outputs hold NaN or infinity
    "runtime": RuntimeValidationError,  # 10: a runtime crashed, refused the artifact, or a check raised
    "gate": GateFailure,  # 11: an acceptance gate of the recipe
}


def exit_code_table() -> str:
    """The Markdown table of every exit code (README's "Errors and exit codes" holds exactly this)."""
    rows = {code: f"| {code} | {text} |" for code, text in OTHER_EXIT_CODES.items()}
    stack = [ToolchainError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls is not ToolchainError and cls.__module__ == __name__:
            doc = " ".join(cls.__doc__.split())
            rows[cls.exit_code] = f"| {cls.exit_code} | `{cls.__name__}`: {doc} |"
    return "\n".join(["| code | meaning |", "|---|---|", *(rows[c] for c in sorted(rows))]) + "\n"


if __name__ == "__main__":
    print(exit_code_table(), end="")
