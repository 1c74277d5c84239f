"""Where an artifact may come from: under one of its app's configured prefixes (issue 7, pt 4).

A publisher of `build-succeeded` is not trusted to name any file it likes: the pipeline file lists,
per app, the URL prefixes its builds are uploaded under (`artifact_prefixes`), and a build whose
artifact lies elsewhere is rejected before anything is recorded or created. The comparison is on
the URL text, so a URL that could resolve outside its apparent prefix (a `.` or `..` segment, a
%-escape, a backslash) is refused outright rather than normalised.
"""

from __future__ import annotations

from collections.abc import Sequence


def artifact_origin_problem(artifact: str, prefixes: Sequence[str]) -> str | None:
    """Why `artifact` may not be deployed for an app with these prefixes, or None if it may.

    >>> prefixes = ["gs://hello-artifacts/hello/"]
    >>> artifact_origin_problem("gs://hello-artifacts/hello/hello-1a2b.tar.gz", prefixes) is None
    True
    >>> artifact_origin_problem("gs://elsewhere/hello/hello-1a2b.tar.gz", prefixes)
    'artifact: gs://elsewhere/hello/hello-1a2b.tar.gz is not under the artifact prefixes of the app (gs://hello-artifacts/hello/)'

    >>> artifact_origin_problem("gs://hello-artifacts/hello/../other/x.tar.gz", prefixes)
    "artifact: must not contain '.' or '..' segments, %-escapes or backslashes"
    >>> artifact_origin_problem("gs://hello-artifacts/hello-evil/x.tar.gz", prefixes) is None
    False
    >>> artifact_origin_problem("gs://hello-artifacts/hello/hello-1a2b.tar.gz", [])
    'artifact: the app lists no artifact_prefixes in the pipeline file, so no build is accepted'
    """
    if not prefixes:
        return "artifact: the app lists no artifact_prefixes in the pipeline file, so no build is accepted"
    if _could_escape(artifact):
        return "artifact: must not contain '.' or '..' segments, %-escapes or backslashes"
    if any(artifact.startswith(prefix) for prefix in prefixes):
        return None
    return f"artifact: {artifact} is not under the artifact prefixes of the app ({', '.join(prefixes)})"


def _could_escape(url: str) -> bool:
    """Whether the URL holds something a downloader might resolve differently from its text.

    >>> _could_escape("file:///tmp/a/./b.tar.gz"), _could_escape("file:///tmp/a%2F..%2Fb.tar.gz")
    (True, True)
    >>> _could_escape("gs://bucket/app/app-1.2.3.tar.gz")
    False
    """
    if "%" in url or "\\" in url:
        return True
    _scheme, _, rest = url.partition("://")
    return any(segment in (".", "..") for segment in rest.split("/"))
