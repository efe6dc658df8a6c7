"""The spec model, pure: YAML text → validated :class:`~generator.spec.model.Spec` → :class:`~generator.spec.topology.Topology`.

No disk and no network: callers hand in text or data. ``model`` is the shape
(pydantic, unknown keys refused), ``validate`` the rules across fields and the
one-line-per-problem errors, ``topology`` everything derived (subnets, broker
placement, addresses, the KRaft quorum), ``regions`` the AZs kafkanet knows,
``yamltext`` strict YAML parsing. May import only ``generator.base``.
"""
