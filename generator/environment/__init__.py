"""An environment's lifecycle: plan, apply, test, destroy and e2e, on the local target or AWS.

``session`` holds what every command shares: the environment (``Env``), its
recorded target and prerequisites, progress and timings, and terraform
(``generator.terraform``) against AWS or the local moto
(``generator.localaws``); ``apply`` plans and applies, builds the local data
plane through ``localplane`` (``localvpc`` with kafkanet's errors) and writes
what the operator uses afterwards: the ``inventory`` (the suite's one input;
its schema is public), pinned ``hostkeys`` and ``sshconfig``; ``destroy``
takes it all down and checks nothing is left. ``suite`` runs the integration
suite. May import every layer below it and ``localvpc``.
"""
