"""Tools for working on the shop on one machine: the local supervisor (`make run`) and the
replay CLI. Not part of any image: the roles never import this package."""
