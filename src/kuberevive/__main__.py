from kuberevive.cli.app import main

raise SystemExit(main())
