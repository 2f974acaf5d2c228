"""The one exception every input check raises."""


class InputError(ValueError):
    """A bad input the user can fix. The message names the input (a flag, a file, a directory)
    and says what would be right; front ends print it as one line (the CLI exits with 2)."""
