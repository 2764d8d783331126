"""The one exception type users should see.

Anything the user can fix (a bad recipe value, a missing Java runtime, an empty rollout file)
is raised as `RwmlError` with a one-paragraph message that names the field, file or value and
says how to fix it. The CLI prints these without a traceback; any other exception is a bug
and keeps its traceback.
"""


class RwmlError(Exception):
    """A problem the user can fix; the message says what and how."""
