from repoctx.cli.main import main

main()
