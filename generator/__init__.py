"""kafkanet: Kafka on EC2 behind a NAT instance, from a compact spec to checked Terraform."""

__version__ = "0.1.0"
