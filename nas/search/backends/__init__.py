"""Where trials run, behind one interface (:class:`base.Backend`): local worker processes (``local``) or Ray
tasks (``ray``); the search loop in :mod:`effnas.nas.search.session` drives either."""
