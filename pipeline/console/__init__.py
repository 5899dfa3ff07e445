"""The operator console (`reid console`): a web application to review the lanes' alerts and curate
the gallery from a browser (docs/console.md). Needs the `[console]` extra (Flask, Flask-WTF, waitress);
`reid edge` and `reid replay` run without it."""
