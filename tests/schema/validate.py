"""Validates portcullis config files against the config's JSON Schema with
Python's jsonschema and PyYAML, libraries portcullis does not use: the way an
editor or a CI job reads the schema, independently of the Rust loader.

Usage: validate.py SCHEMA FILE...; prints one JSON line per file:
{"file": FILE, "errors": [{"path": "issuers.kinde", "message": "..."}]}, where
errors are every node of jsonschema's error tree (the anyOf/oneOf that failed
and why each branch failed), so a test can see the innermost key that was refused. Exits 2 if SCHEMA itself is
not a valid schema of the draft it declares.
"""
import json
import sys

import yaml
from jsonschema.validators import validator_for


def tree(error):
    yield error
    for child in error.context:
        yield from tree(child)


def dotted(path):
    return ".".join(str(part) for part in path)


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as file:
        schema = json.load(file)
    validator_class = validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except Exception as error:  # the Rust side prints this and fails
        print(f"invalid schema: {error}", file=sys.stderr)
        sys.exit(2)
    validator = validator_class(schema)
    for name in sys.argv[2:]:
        with open(name, encoding="utf-8") as file:
            document = yaml.safe_load(file)
        errors = [
            {"path": dotted(node.absolute_path), "message": node.message}
            for error in validator.iter_errors(document)
            for node in tree(error)
        ]
        print(json.dumps({"file": name, "errors": errors}), flush=True)


if __name__ == "__main__":
    main()
