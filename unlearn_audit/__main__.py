"""``python -m unlearn_audit`` runs the command line."""

from unlearn_audit.cli import main

main()
