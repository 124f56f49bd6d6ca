from pgrpo.cli import console

raise SystemExit(console())
