"""What a flow author writes: ``Workflow``, ``@step``, ``@signal``, the commands a step
yields, and loading flow files into classes."""
