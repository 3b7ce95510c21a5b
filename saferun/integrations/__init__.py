"""Ways to bring SafeRun's approvals to code that was not written for it.

- ``requires_approval`` / ``supervised_tool`` (``saferun.integrations.decorator``): any sync or async
  function behind a checkpoint of the current ``supervised()`` run.
- ``saferun.integrations.langgraph``: LangGraph nodes and tools whose calls become SafeRun approvals,
  the graph resuming with the decision. Imported on its own, so LangGraph stays an optional extra
  (``pip install 'saferun[langgraph]'``).
"""

from saferun.integrations.decorator import (
    NoSupervisedRun,
    StandaloneWorkflow,
    requires_approval,
    supervised_tool,
)

__all__ = ["NoSupervisedRun", "StandaloneWorkflow", "requires_approval", "supervised_tool"]
