from pgrpo.cli import main

raise SystemExit(main())
