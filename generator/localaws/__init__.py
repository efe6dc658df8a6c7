"""The local AWS API: a moto server per environment on 127.0.0.1, and its compatibility shim.

``moto_server`` starts, finds and stops the server (its pid recorded under the
build directory) and makes loopback-only boto3 clients; ``moto_compat`` is
loaded into the server to make moto answer as AWS does where the AWS provider
needs it. May import only ``generator.base``.
"""
