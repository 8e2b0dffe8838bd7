"""Fault injection: pure planning (``planning``), one driver interface (``driving``), the local
driver (``local``) and the active-fault ledger with the experiment lock (``records``)."""
