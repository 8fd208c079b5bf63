"""The search and training on top of specs and models: ``training/`` (data, engine, full training), ``search/``
(the proxy trial, the session, controllers and backends) and ``cli/`` (the ``nas`` command)."""
