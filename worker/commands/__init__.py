"""The command handlers, one module per command group; :mod:`worker.cli` dispatches to them.

Each module has ``register(commands, common)``, which adds its sub-commands with a handler
``async def handler(args, config) -> int``. They build what they need through the composition
root (:mod:`worker.runtime`) and hold no runtime logic of their own.

- ``run``: ``run``, the worker pool (and the batch submitter beside it);
- ``demo``: ``demo``, the simulator, a SQLite queue, a pool and an export in one process;
- ``enqueue``: ``enqueue``, job files (or one prompt) into the queue, with ``--dry-run`` costs;
- ``queue``: ``status``, ``show``, ``export``, ``retry``, ``cancel``, ``delete``;
- ``prune``: ``prune``, finished jobs that ended long ago deleted (``[queue] retention`` in ``run``);
- ``schedule``: ``schedule add|list|remove``;
- ``migrate``: ``migrate``, the schema brought up to date;
- ``serve``: ``serve``, the HTTP API, relay and dashboard;
- ``simulate``: ``simulate``, the Messages API simulator;
- ``cost_text``: how money is worded by ``status``, ``show`` and ``enqueue --dry-run``.
"""
