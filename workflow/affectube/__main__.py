from affectube.cli import main

raise SystemExit(main())
