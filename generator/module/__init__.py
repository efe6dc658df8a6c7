"""The Terraform root module: a spec file → ``{path: text}`` → the build directory.

``loaded`` reads a spec from disk (a path or an environment name);
``render`` turns a topology into the module's files through ``templates/``
(pure); ``writer`` writes them atomically, only what changed; ``readme``,
``diagram`` and ``cost`` add the module README, the picture and the monthly
cost, priced from the book ``prices`` reads (``prices.yaml``); ``keys`` and
``admincidr`` make the environment's SSH key and resolve ``--admin-cidr
auto``; ``generate`` ties them together. ``check`` runs every static check on
a module directory (terraform fmt/validate, shellcheck, systemd-analyze,
cloud-init, checkov), with ``userdata`` finding the scripts and units the user
data installs. May import ``generator.spec`` and ``generator.base``.
"""
