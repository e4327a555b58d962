"""Open311 GeoReport v2: Whistle as a civic-standard server (``/open311/v2/``).

- ``catalog``: the service list and definitions, worked out from the routing rules (pure);
- ``mapping``: a POSTed form to a :class:`~shared.contracts.SubmitIssue`, and issues and
  their journals to Open311 requests and updates (pure);
- ``formats``: the JSON and XML renderings and the error shape (pure);
- ``clients``: API keys, the requests each client created, the posting limit (Redis);
- ``api``: the thin HTTP entrypoints, mixed into the intake service.

See docs/open311.md for the field-by-field mapping.
"""
