"""The one exception type for problems the user can fix (bad data, bad params, missing files)."""


class PipelineError(Exception):
    """A problem with the user's input.

    Stage commands print its message as one sentence and exit non-zero, without a traceback.
    Anything else that escapes is a bug in the pipeline and keeps its traceback.
    """
