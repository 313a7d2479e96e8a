from camrec.cli import main

raise SystemExit(main())
