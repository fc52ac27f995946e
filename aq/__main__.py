from aq.cli.main import main

main()
