from medsft.cli import main

raise SystemExit(main())
