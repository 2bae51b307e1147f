"""What a flow author writes: ``Workflow``, ``@step``, ``@signal``, the commands a step
yields, loading flow files into classes, and the plan of a new flow (``tinywf new``)."""
