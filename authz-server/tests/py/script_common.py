"""What the test scripts share: one-line failures, one-line usage errors, and the main
wrapper that prints one JSON line on success or one stderr line (exit 1) on failure."""

import argparse
import json
import sys


class Failure(Exception):
    """A step went wrong; the message is the single stderr line."""


def one_line(text, limit=400):
    """Collapse whitespace and cut to ``limit`` characters, for error lines."""
    text = ' '.join(str(text).split())
    return text if len(text) <= limit else text[:limit] + '...'


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are a single stderr line (exit status 2)."""

    def error(self, message):
        self.exit(2, '%s: usage error: %s (see --help)\n' % (self.prog, message))


def run_main(prog, run, args, expected=(OSError,)):
    """Run ``run(args)``: print its result as one JSON line and return 0, or print one
    stderr line and return 1. ``expected`` errors are shown without their type name."""
    try:
        result = run(args)
    except Failure as exc:
        print('%s: %s' % (prog, exc), file=sys.stderr)
        return 1
    except expected as exc:
        print('%s: %s' % (prog, one_line(exc)), file=sys.stderr)
        return 1
    except Exception as exc:  # anything unforeseen still gives one line, not a traceback
        print('%s: unexpected %s: %s' % (prog, type(exc).__name__, one_line(exc)), file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
