"""Errors about the user's input. The CLI prints them as one line and exits with status 2.

Messages name the file, the record (or tensor) and the field, so a user can fix the input.
"""


class UserError(Exception):
  """Bad input from the user: a file, a record, a flag, a config value."""
