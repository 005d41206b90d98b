"""The shape engine: shape definitions, log items, snapshots and their join with the replication log.

Pure modules (no actors, no I/O beyond what a caller's connection does): ``identifiers`` (request names),
``definition`` (ShapeDefinition, handles), ``log_items`` (spec §5 item bytes), ``snapshot`` and ``xid``
(initial snapshot and its join with the log), ``schema`` (the electric-schema header), ``catalog``
(the catalog facts they need, as Protocols).  The actors (ShapeCache, consumers, the collector) call them.
"""
