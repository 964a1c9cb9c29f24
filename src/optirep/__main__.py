from optirep.cli import main

raise SystemExit(main())
