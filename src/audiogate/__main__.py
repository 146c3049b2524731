from audiogate.cli import main

raise SystemExit(main())
