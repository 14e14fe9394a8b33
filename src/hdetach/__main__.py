from hdetach.experiments.cli import main

main()
