"""The one exception type for mistakes a user can fix (bad config, missing path, unknown experiment).

Entry points catch it and print one line instead of a traceback; everything else is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """A problem in what the user gave us; the message names the problem and the fix."""
