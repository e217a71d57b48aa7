"""Errors that are the user's to fix (a flag, a missing dataset, an absent GPU). The CLI reports
them as one line on stderr with exit code 2, like argparse does, instead of a traceback."""


class UserError(Exception):
    pass
