"""The single executable's entry point (packaging/build-binary.sh): the same main as the console script."""

from kuberevive.cli.app import main

raise SystemExit(main())
