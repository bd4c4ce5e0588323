"""Verifies JWTs with PyJWT, a library portcullis does not use.

Reads one JSON object per line on stdin: {"token", "key", "alg", "audience"}
(key: an HS secret or a PEM public key; audience may be null), and prints one
JSON line per token: {"header": ..., "claims": ...} or {"error": "..."}.
"""
import json
import sys

import jwt


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        try:
            header = jwt.get_unverified_header(request["token"])
            claims = jwt.decode(
                request["token"],
                request["key"],
                algorithms=[request["alg"]],
                audience=request.get("audience"),
                options={"require": ["exp", "iat"], "verify_aud": request.get("audience") is not None},
            )
            print(json.dumps({"header": header, "claims": claims}), flush=True)
        except Exception as error:  # report, never crash: the Rust side asserts
            print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)


if __name__ == "__main__":
    main()
