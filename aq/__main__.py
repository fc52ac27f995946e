from aq.cli.entry import main

main()
