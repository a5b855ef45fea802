"""`stepcoder-jax config`: parse gin files/bindings and print the resulting config (a dry run)."""
import gin

HELP = "parse --gin_file/--gin.NAME=VALUE and print the config (validates bindings)"


def add_arguments(parser):
  del parser  # gin flags only


def run(args) -> int:
  del args
  print(gin.config_str())
  return 0
