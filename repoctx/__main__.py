from repoctx.cli import main

main()
