"""argparse value types whose errors read well: "argument --batch: expected a positive integer, got '0'".

They parse with oea_trt.inputs.numbers, so "3.0", "1e3" or "true" are not integers here either."""
import argparse

from oea_trt.inputs import InputError, parse_float, parse_int


def _typed(parse, expected: str, name: str):
    def convert(text: str):
        try:
            return parse(text)
        except InputError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    convert.__name__ = name
    return convert


positive_int = _typed(lambda t: parse_int(t, "value", lo=1), "a positive integer", "positive_int")
non_negative_int = _typed(lambda t: parse_int(t, "value", lo=0), "an integer >= 0", "non_negative_int")
port = _typed(lambda t: parse_int(t, "value", lo=1, hi=65535), "a port number in [1, 65535]", "port")
positive_float = _typed(lambda t: parse_float(t, "value", lo=0.0, lo_open=True), "a positive number", "positive_float")
non_negative_float = _typed(lambda t: parse_float(t, "value", lo=0.0), "a number >= 0", "non_negative_float")
fraction = _typed(lambda t: parse_float(t, "value", lo=0.0, hi=1.0, lo_open=True), "a number in (0, 1]", "fraction")


def integer(text: str) -> int:
    """Any decimal integer (a seed)."""
    return _typed(lambda t: parse_int(t, "value"), "an integer", "integer")(text)
