from theworld.cli.main import main

raise SystemExit(main())
