"""Run by Debian's python3 with trixie's cloud-init on PYTHONPATH: validate many files in one
process (the CLI costs a second a file). Reads `TYPE<TAB>PATH` lines, answers one JSON line each.
"""

import contextlib
import io
import json
import sys

from cloudinit.config.schema import (
    SchemaType,
    SchemaValidationError,
    get_schema,
    validate_cloudconfig_file,
)

for line in sys.stdin:
    kind, path = line.rstrip("\n").split("\t", 1)
    schema_type = SchemaType(kind)
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            validate_cloudconfig_file(path, get_schema(schema_type), schema_type)
        answer = {"ok": True, "error": ""}
    except SchemaValidationError as exc:
        answer = {"ok": False, "error": str(exc)}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
