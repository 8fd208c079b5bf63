"""The search: the proxy trial, the session that proposes, records and budgets trials, the controllers,
and the backends that run trials (local worker processes or Ray tasks)."""
