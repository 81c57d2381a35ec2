#!/usr/bin/python3
"""Parse a /metrics body with Debian's python3-prometheus-client (the
parser Prometheus' own Python client uses) and print every sample as one
line, `name{label="value",...} value`, labels sorted, so the C test reads
values the parser saw. Exit 1 with the parser's complaint on a bad body, or
when a family lacks its # HELP or # TYPE line."""
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and friends
        print("parse error: %s" % e)
        return 1
    for fam in families:
        if fam.type == "unknown" or not fam.documentation:
            print("family %s has no # TYPE or # HELP" % fam.name)
            return 1
        for s in fam.samples:
            labels = ",".join('%s="%s"' % (k, s.labels[k]) for k in sorted(s.labels))
            print("%s{%s} %r" % (s.name, labels, s.value))
    return 0


if __name__ == "__main__":
    sys.exit(main())
