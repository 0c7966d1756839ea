"""mlx_tune: an Apple Silicon-native fine-tuning suite for local coder models on mlx and mlx-lm."""

__version__ = "0.1.0"


class UserError(ValueError):
    """A problem with the user's input (a file, a field, an option).

    The message names what is wrong and where (``file:line: field: problem``) and,
    where it helps, what to do. The CLI prints it as one ``Error:`` line and exits 1.
    """
